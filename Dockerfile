# squadron's container image: docker build -t squadron .
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake libssl-dev pkg-config && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin squadron

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends libssl3 ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/squadron /usr/local/bin/squadron
COPY rules /etc/squadron/rules
COPY catalog /etc/squadron/catalog
COPY deploy/squadron.yaml /etc/squadron/squadron.yaml
EXPOSE 9464
ENTRYPOINT ["squadron"]
CMD ["run", "--config", "/etc/squadron/squadron.yaml"]
