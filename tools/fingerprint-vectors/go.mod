module squadron/tools/fingerprint-vectors

go 1.26.8

require (
	github.com/prometheus/client_model v0.6.3 // indirect
	github.com/prometheus/common v0.73.1 // indirect
	google.golang.org/protobuf v1.36.12 // indirect
)
