// Prints Alertmanager fingerprints (prometheus/common model.LabelSet.Fingerprint)
// for the label sets squadron's tests check against.
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/prometheus/common/model"
)

func main() {
	sets := []map[string]string{
		{"alertname": "HighErrorRate"},
		{"alertname": "HighErrorRate", "service": "checkout", "severity": "critical"},
		{"alertname": "KubePodCrashLooping", "namespace": "payments", "pod": "checkout-7d9f8-abcde", "service": "checkout", "severity": "warning", "env": "production", "instance": "10.0.3.17:8080", "job": "kube-state-metrics"},
		{"a": "", "b": "x"},
		{"__name__": "up", "job": "prometheus"},
		{"alertname": "Ünïcödé", "message": "quote \" and backslash \\ and newline \n"},
		{"node": "node-17", "alertname": "NodeDown", "severity": "critical", "service": "kubernetes"},
		{"z": "1", "y": "2", "x": "3", "w": "4", "v": "5", "u": "6", "t": "7", "s": "8", "r": "9"},
	}
	type vec struct {
		Labels      map[string]string `json:"labels"`
		Fingerprint string            `json:"fingerprint"`
	}
	out := []vec{}
	for _, s := range sets {
		ls := model.LabelSet{}
		for k, v := range s {
			ls[model.LabelName(k)] = model.LabelValue(v)
		}
		out = append(out, vec{s, ls.Fingerprint().String()})
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	enc.Encode(out)
	fmt.Fprintln(os.Stderr, "ok")
}
