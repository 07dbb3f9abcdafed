// monitoring-validate checks prometheus-operator objects (ServiceMonitor, PodMonitor,
// PrometheusRule) by
// decoding them strictly into the operator's own Go API types: an unknown field, a field of the
// wrong type or a malformed document is an error. scripts/chart-lint.sh builds and runs it; the
// Kubernetes built-in kinds and Ryzanstein's CRDs are checked by scripts/chart_validate.py.
//
// Usage: monitoring-validate FILE... (multi-document YAML; every document must be one of the
// kinds below). Exit status 1 when any document is invalid, 2 on usage errors.
package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	yamlv3 "gopkg.in/yaml.v3"
	"sigs.k8s.io/yaml"
)

type typeMeta struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
}

// validate decodes one JSON-compatible YAML document strictly into its Go type.
func validate(doc []byte) (string, error) {
	var tm typeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return "?", fmt.Errorf("not a Kubernetes object: %w", err)
	}
	name := fmt.Sprintf("%s/%s", tm.Kind, tm.Metadata.Name)
	if tm.Metadata.Name == "" {
		return name, errors.New("metadata.name is empty")
	}
	var obj any
	switch {
	case tm.APIVersion == "monitoring.coreos.com/v1" && tm.Kind == "ServiceMonitor":
		obj = &monitoringv1.ServiceMonitor{}
	case tm.APIVersion == "monitoring.coreos.com/v1" && tm.Kind == "PrometheusRule":
		obj = &monitoringv1.PrometheusRule{}
	case tm.APIVersion == "monitoring.coreos.com/v1" && tm.Kind == "PodMonitor":
		obj = &monitoringv1.PodMonitor{}
	default:
		return name, fmt.Errorf("unsupported apiVersion %q kind %q (this tool knows monitoring.coreos.com/v1 ServiceMonitor, PodMonitor and PrometheusRule)", tm.APIVersion, tm.Kind)
	}
	if err := yaml.UnmarshalStrict(doc, obj); err != nil {
		return name, err
	}
	return name, nil
}

// documents splits a multi-document YAML stream, re-encoding each non-empty document.
func documents(data []byte) ([][]byte, error) {
	dec := yamlv3.NewDecoder(bytes.NewReader(data))
	var out [][]byte
	for {
		var node yamlv3.Node
		err := dec.Decode(&node)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		if len(node.Content) == 0 || node.Content[0].Kind == yamlv3.ScalarNode && node.Content[0].Tag == "!!null" {
			continue
		}
		b, err := yamlv3.Marshal(&node)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: monitoring-validate FILE...")
		os.Exit(2)
	}
	failed, checked := 0, 0
	for _, path := range os.Args[1:] {
		data, err := os.ReadFile(path)
		if err != nil {
			fmt.Fprintf(os.Stderr, "monitoring-validate: %v\n", err)
			os.Exit(2)
		}
		docs, err := documents(data)
		if err != nil {
			fmt.Printf("FAIL %s: not valid YAML: %v\n", path, err)
			failed++
			continue
		}
		for _, doc := range docs {
			checked++
			name, err := validate(doc)
			if err != nil {
				fmt.Printf("FAIL %s: %s: %v\n", path, name, err)
				failed++
			} else {
				fmt.Printf("ok   %s: %s\n", path, name)
			}
		}
	}
	if checked == 0 {
		fmt.Println("FAIL no documents to check")
		os.Exit(1)
	}
	if failed > 0 {
		os.Exit(1)
	}
}
