#!/usr/bin/env python3
"""Alertmanager and squadron side by side, on the same alerts, in real time.

One live stream (`squadron generate live`) is POSTed, message by message at its
own pace, to Alertmanager's /api/v2/alerts and to squadron's (which stores it in
Kafka). Two squadron instances consume it:
  - "equivalent": rules that say exactly what the Alertmanager config says
    (same group_by and timers, the same drops as blackhole routes, the same
    inhibitions, one route/squad);
  - "shipped": the example rules in rules/ (per-squad grouping, flap detection,
    storm limits, core protection).
Reported: notifications each sent, and CPU seconds each process used.

With --rss N it measures memory instead: N distinct alerts that keep firing
(8 labels, 2 annotations, as Prometheus sends them) are POSTed to both, and
once every process holds them all, each one's resident memory growth over
its idle start (VmRSS) per active alert is reported.

With --ingest it measures the HTTP ingest instead: `squadron loadgen` offers
Prometheus batches over keep-alive connections to each one's /api/v2/alerts in
turn (Alertmanager, squadron, Alertmanager, ...), at maximum load and then at a
fixed low rate. Reported per run: accepted alerts/s, request latency, and CPU
per 1,000 alerts of the process (squadron's until its pipeline has decided
every accepted alert) and of the broker; then the ratios of the medians.

Alertmanager is the current release built from its Go module
(scripts/alertmanager.sh, cached), or --alertmanager PATH (e.g.
prometheus-alertmanager, Debian's 0.25).

Needs: a broker (scripts/kafka.sh start), Go (or --alertmanager), a built
squadron (cargo build --release). Loopback only.

    scripts/compare-alertmanager.py --brokers 127.0.0.1:19092 --duration 3m
    scripts/compare-alertmanager.py --brokers 127.0.0.1:19092 --rss 100000
    scripts/compare-alertmanager.py --brokers 127.0.0.1:19092 --ingest --rounds 3
"""
import argparse, json, os, re, shutil, socket, statistics, subprocess, sys, tempfile, threading, time, urllib.request
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SQUADRON = os.path.join(ROOT, "target", "release", "squadron")

TIMERS = {"group_wait": "10s", "group_interval": "30s", "repeat_interval": "4h"}
GROUP_BY = ["alertname", "service"]
DROPS = ['env=~"staging|dev|test|qa"', 'severity=~"info|none"']
INHIBITS = [
    ({"source": ['alertname="NodeDown"'], "target": ['alertname=~"KubePod.*|ContainerRestarting|TargetDown"'], "equal": ["cluster", "node"]}),
    ({"source": ['severity="critical"'], "target": ['severity="warning"'], "equal": ["alertname", "service", "instance"]}),
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_http(url, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except Exception:
            time.sleep(0.3)
    sys.exit(f"{url} not ready")


def post(url, body):
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def measure_rss(n, am, am_port, instances, ingest_port):
    """POSTs n distinct firing alerts to both; returns each process's VmRSS
    growth per active alert once all hold every alert."""
    time.sleep(10)  # idle start: joined, restored, loaded
    procs = {"alertmanager": am, **{f"squadron_{k}": p for k, (p, _) in instances.items()}}
    before = {k: rss_bytes(p.pid) for k, p in procs.items()}
    ends = datetime.fromtimestamp(time.time() + 3 * 3600).astimezone().isoformat()
    batch = 500
    for start in range(0, n, batch):
        alerts = [{
            "labels": {"alertname": f"RssProbe{i % 20}", "service": f"svc-{i % 50}", "instance": f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}:9100",
                       "pod": f"pod-{i}", "namespace": f"ns-{i % 30}", "cluster": f"eu-{i % 3}", "env": "production", "severity": "warning"},
            "annotations": {"summary": f"probe {i} is slow", "description": "p99 latency above 500 ms for 10 minutes"},
            "startsAt": datetime.now().astimezone().isoformat(), "endsAt": ends,
            "generatorURL": "http://prometheus:9090/graph?g0.expr=probe_latency",
        } for i in range(start, min(start + batch, n))]
        body = json.dumps(alerts).encode()
        if post(f"http://127.0.0.1:{am_port}/api/v2/alerts", body) != 200 or post(f"http://127.0.0.1:{ingest_port}/api/v2/alerts", body) != 200:
            sys.exit("a POST failed")
    deadline = time.time() + 600
    while time.time() < deadline:
        held = [metric_sum(am_port, "alertmanager_alerts", 'state="active"')] + [metric_sum(port, "squadron_active_alerts") for _, port in instances.values()]
        if all(h >= n for h in held):
            break
        time.sleep(2)
    else:
        sys.exit(f"not every process holds {n} alerts: {held}")
    time.sleep(10)
    result = {"active_alerts": n, "date": datetime.now().astimezone().isoformat(timespec="seconds")}
    for k, p in procs.items():
        after = rss_bytes(p.pid)
        result[k] = {"rss_before_mib": round(before[k] / 2**20, 1), "rss_after_mib": round(after / 2**20, 1),
                     "rss_bytes_per_alert": round((after - before[k]) / n)}
    am_per = result["alertmanager"]["rss_bytes_per_alert"]
    for k in procs:
        if k != "alertmanager":
            result[k]["of_alertmanager"] = round(result[k]["rss_bytes_per_alert"] / am_per, 3)
    return result


def metric_sum(port, name, label=""):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as r:
        text = r.read().decode()
    return sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines()
               if (l.startswith(name + "{") or l.startswith(name + " ")) and label in l)


def broker_pid(brokers):
    """The pid of the broker scripts/kafka.sh started on the first bootstrap port, if any."""
    port = brokers.split(",")[0].rsplit(":", 1)[-1]
    path = os.environ.get("SQUADRON_KAFKA_DIR", f"/tmp/squadron-kafka-{port}") + "/kafka.pid"
    try:
        return int(open(path).read().strip())
    except (OSError, ValueError):
        return None


def loadgen(url, seconds, extra):
    out = subprocess.run([SQUADRON, "loadgen", "--url", url, "--duration", f"{seconds}s", "--json", *extra],
                         capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"loadgen against {url} failed: {out.stderr}")
    return json.loads(out.stdout)


def measure_ingest(args, am, am_port, squadron, squadron_port, broker):
    """Alternating loadgen runs against each; CPU per 1,000 accepted alerts."""
    time.sleep(10)  # idle start: joined, restored, loaded
    extra = ["--concurrency", str(args.concurrency), "--batch", str(args.batch)]
    targets = {"alertmanager": (am, am_port), "squadron": (squadron, squadron_port)}
    runs = {k: {"max": [], "low_rate": []} for k in targets}
    for _ in range(args.rounds):
        for name, (proc, port) in targets.items():
            for load, more in [("max", []), ("low_rate", ["--rate", str(args.low_rate)])]:
                received0 = metric_sum(port, "squadron_alerts_received_total") if name == "squadron" else 0
                cpu0 = cpu_seconds(proc.pid)
                b0 = cpu_seconds(broker) if broker else 0.0
                protocol = ["--http2"] if args.http2 and name == "squadron" else []
                report = loadgen(f"http://127.0.0.1:{port}/api/v2/alerts", args.ingest_seconds, extra + more + protocol)
                if name == "squadron":
                    # Count the pipeline's work too: until it has decided what was accepted.
                    deadline = time.time() + 120
                    while metric_sum(port, "squadron_alerts_received_total") - received0 < report["accepted_alerts"]:
                        if time.time() > deadline:
                            sys.exit("squadron did not decide every accepted alert within 120 s")
                        time.sleep(0.2)
                else:
                    time.sleep(1)
                cpu = cpu_seconds(proc.pid) - cpu0
                bcpu = (cpu_seconds(broker) - b0) if broker else 0.0
                k = max(report["accepted_alerts"], 1) / 1000
                runs[name][load].append({
                    "accepted_per_second": report["accepted_per_second"],
                    "latency_ms_p50": report["latency_ms_p50"], "latency_ms_p99": report["latency_ms_p99"],
                    "answers": report["answers"],
                    "cpu_s_per_1000": round(cpu / k, 5),
                    "broker_cpu_s_per_1000": round(bcpu / k, 5),
                })
    med = lambda load, name, key: statistics.median(r[key] for r in runs[name][load])
    result = {"mode": "ingest", "date": datetime.now().astimezone().isoformat(timespec="seconds"),
              "alertmanager_version": args.alertmanager_version,
              "squadron_protocol": "HTTP/2" if args.http2 else "HTTP/1.1", "concurrency": args.concurrency, "batch": args.batch,
              "seconds_per_run": args.ingest_seconds, "low_rate": args.low_rate, "runs": runs}
    am_cpu = med("max", "alertmanager", "cpu_s_per_1000")
    result["ratios"] = {
        "accepted_per_second": round(med("max", "squadron", "accepted_per_second") / med("max", "alertmanager", "accepted_per_second"), 2),
        "cpu_per_alert": round(med("max", "squadron", "cpu_s_per_1000") / am_cpu, 3),
        # Alertmanager needs no broker; squadron's stores every alert in one.
        "cpu_per_alert_with_broker": round((med("max", "squadron", "cpu_s_per_1000") + med("max", "squadron", "broker_cpu_s_per_1000")) / am_cpu, 3),
        "low_rate_cpu_per_alert_with_broker": round((med("low_rate", "squadron", "cpu_s_per_1000") + med("low_rate", "squadron", "broker_cpu_s_per_1000")) / med("low_rate", "alertmanager", "cpu_s_per_1000"), 3),
    }
    return result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--brokers", default="127.0.0.1:19092")
    ap.add_argument("--duration", default="3m")
    ap.add_argument("--rss", type=int, default=0, metavar="N", help="measure resident memory per active alert at N alerts instead")
    ap.add_argument("--ingest", action="store_true", help="measure HTTP ingest (accepted alerts/s, CPU per alert) instead")
    ap.add_argument("--rounds", type=int, default=2, help="--ingest: alternating rounds")
    ap.add_argument("--ingest-seconds", type=int, default=20, help="--ingest: seconds per run")
    ap.add_argument("--concurrency", type=int, default=16, help="--ingest: requests in flight (keep-alive connections)")
    ap.add_argument("--batch", type=int, default=64, help="--ingest: alerts per request")
    ap.add_argument("--low-rate", type=int, default=2000, help="--ingest: the fixed low rate, alerts/s")
    ap.add_argument("--http2", action="store_true", help="--ingest: squadron over HTTP/2 on one connection (Alertmanager stays on HTTP/1.1: it serves HTTP/2 only over TLS)")
    ap.add_argument("--alertmanager", default=None, help="Alertmanager binary; default: built by scripts/alertmanager.sh")
    args = ap.parse_args()
    if args.alertmanager is None:
        args.alertmanager = subprocess.run([os.path.join(ROOT, "scripts", "alertmanager.sh"), "path"], check=True,
                                           capture_output=True, text=True).stdout.strip()
    # Older releases print their version on stderr.
    args.alertmanager_version = subprocess.run([args.alertmanager, "--version"], stdout=subprocess.PIPE,
                                               stderr=subprocess.STDOUT, text=True).stdout.split("\n")[0]
    work = tempfile.mkdtemp(prefix="squadron-vs-am-")
    run_id = str(int(time.time()))
    topic = f"compare-{run_id}"

    # Alertmanager's webhook receiver: count what it delivers.
    delivered = {"notifications": 0, "alerts": 0, "abandoned": 0}

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):
            try:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            except (ValueError, OSError):
                # Alertmanager gave up mid-body (its webhook timeout, with
                # notifications of thousands of alerts): counted, not a traceback.
                delivered["abandoned"] += 1
                return
            delivered["notifications"] += 1
            delivered["alerts"] += len(body.get("alerts", []))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *a):
            pass

    hook_port = free_port()
    threading.Thread(target=ThreadingHTTPServer(("127.0.0.1", hook_port), Hook).serve_forever, daemon=True).start()

    # Alertmanager's configuration.
    def matchers(ms):
        return "[" + ", ".join("'" + m + "'" for m in ms) + "]"
    am_cfg = [
        "route:",
        "  receiver: hook",
        f"  group_by: {json.dumps(GROUP_BY)}",
        *[f"  {k}: {v}" for k, v in TIMERS.items()],
        "  routes:",
        *[line for m in DROPS for line in (f"    - matchers: {matchers([m])}", "      receiver: blackhole")],
        "receivers:",
        "  - name: hook",
        f"    webhook_configs: [{{url: 'http://127.0.0.1:{hook_port}/', send_resolved: true}}]",
        "  - name: blackhole",
        "inhibit_rules:",
        *[line for i in INHIBITS for line in (f"  - source_matchers: {matchers(i['source'])}", f"    target_matchers: {matchers(i['target'])}", f"    equal: {json.dumps(i['equal'])}")],
    ]
    with open(os.path.join(work, "alertmanager.yml"), "w") as f:
        f.write("\n".join(am_cfg) + "\n")

    # squadron rules saying the same.
    eq = os.path.join(work, "equivalent-rules")
    os.makedirs(eq)
    with open(os.path.join(eq, "rules.yaml"), "w") as f:
        f.write("ownership: {fallback_squad: all}\nsquads: [{name: all, topic: compare-notes-" + run_id + "}]\n")
        f.write("grouping: {group_by: " + json.dumps(GROUP_BY) + ", " + ", ".join(f"{k}: {v}" for k, v in TIMERS.items()) + "}\n")
        f.write("impact_rules:\n" + "".join(f"  - {{name: drop-{n}, match: {matchers([m])}, action: drop}}\n" for n, m in enumerate(DROPS)))
        f.write("inhibit_rules:\n" + "".join(f"  - {{name: inhibit-{n}, source_matchers: {matchers(i['source'])}, target_matchers: {matchers(i['target'])}, equal: {json.dumps(i['equal'])}}}\n" for n, i in enumerate(INHIBITS)))
    check = subprocess.run([SQUADRON, "check", eq], capture_output=True, text=True)
    if check.returncode != 0:
        sys.exit(check.stderr)
    # The shipped rules, with the same timers (so both runs flush within the test).
    shipped = os.path.join(work, "shipped-rules")
    shutil.copytree(os.path.join(ROOT, "rules"), shipped, ignore=shutil.ignore_patterns("tests"))
    shutil.copytree(os.path.join(ROOT, "catalog"), os.path.join(work, "catalog"))
    d = open(os.path.join(shipped, "00-defaults.yaml")).read()
    d = re.sub(r"group_wait: 30s\n  group_interval: 5m", "group_wait: 10s\n  group_interval: 30s", d)
    open(os.path.join(shipped, "00-defaults.yaml"), "w").write(d)

    am_port, am_cluster = free_port(), free_port()
    am = subprocess.Popen([args.alertmanager, f"--config.file={work}/alertmanager.yml", f"--storage.path={work}/am",
                           f"--web.listen-address=127.0.0.1:{am_port}", f"--cluster.listen-address=", "--log.level=warn"],
                          stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "am.log"), "w"))
    instances = {}
    # The ingest runs measure one squadron beside Alertmanager.
    for name, rules in [("equivalent", eq)] + ([] if args.ingest else [("shipped", shipped)]):
        port = free_port()
        env = dict(os.environ, SQUADRON_LOG=os.environ.get("SQUADRON_LOG", "warn"))
        proc = subprocess.Popen([SQUADRON, "run", "--rules", rules, "--bootstrap-servers", args.brokers, "--group-id", f"{topic}-{name}",
                                 "--input-topics", topic, "--dead-letter-topic", f"{topic}-dlq", "--http-listen", f"127.0.0.1:{port}",
                                 "--kafka-property", "topic.metadata.refresh.interval.ms=1000"],
                                env=env, stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, f"{name}.log"), "w"))
        instances[name] = (proc, port)
    wait_http(f"http://127.0.0.1:{am_port}/-/ready")
    for name, (proc, port) in instances.items():
        wait_http(f"http://127.0.0.1:{port}/healthz")

    if args.ingest:
        try:
            proc, port = instances["equivalent"]
            print(json.dumps(measure_ingest(args, am, am_port, proc, port, broker_pid(args.brokers))))
        finally:
            for p in [am] + [p for p, _ in instances.values()]:
                p.terminate()
        return

    if args.rss:
        try:
            print(json.dumps(measure_rss(args.rss, am, am_port, instances, instances["equivalent"][1])))
        finally:
            for p in [am] + [p for p, _ in instances.values()]:
                p.terminate()
        return

    stream = os.path.join(work, "live.jsonl")
    # Valid alerts only, as Prometheus sends: both reject a whole batch for one bad alert.
    subprocess.run([SQUADRON, "generate", "live", "--start", "now", "--bad-ratio", "0", "--duration", args.duration, "-o", stream], check=True)
    lines = [json.loads(l) for l in open(stream)]
    # Only alert arrays (what Prometheus sends); the bad-input lines are squadron's business.
    lines = [l for l in lines if isinstance(l.get("message"), list)]
    cpu0 = {"alertmanager": cpu_seconds(am.pid), **{n: cpu_seconds(p.pid) for n, (p, _) in instances.items()}}
    ingest_port = instances["equivalent"][1]
    start = time.time()
    first = None
    sent = 0
    for l in lines:
        at = datetime.fromisoformat(l["received_at"].replace("Z", "+00:00")).timestamp()
        first = first or at
        delay = (at - first) - (time.time() - start)
        if delay > 0:
            time.sleep(delay)
        body = json.dumps(l["message"]).encode()
        if post(f"http://127.0.0.1:{am_port}/api/v2/alerts", body) != 200 or post(f"http://127.0.0.1:{ingest_port}/api/v2/alerts", body) != 200:
            print("a POST failed", file=sys.stderr)
        sent += len(l["message"])
    time.sleep(45)  # group_wait and one group_interval for the last groups
    cpu = {"alertmanager": cpu_seconds(am.pid) - cpu0["alertmanager"], **{n: cpu_seconds(p.pid) - cpu0[n] for n, (p, _) in instances.items()}}
    result = {
        "alerts_sent": sent,
        "messages": len(lines),
        "seconds": round(time.time() - start, 1),
        "alertmanager": {"notifications": delivered["notifications"], "alerts_in_notifications": delivered["alerts"], "cpu_seconds": round(cpu["alertmanager"], 2)},
    }
    for name, (proc, port) in instances.items():
        result[f"squadron_{name}"] = {
            "notifications": int(metric_sum(port, "squadron_notifications_total")),
            "alerts_decided": int(metric_sum(port, "squadron_alert_fates_total")),
            "cpu_seconds": round(cpu[name], 2),
        }
    for p in [am] + [p for p, _ in instances.values()]:
        p.terminate()
    for p in [am] + [p for p, _ in instances.values()]:
        p.wait(timeout=60)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
