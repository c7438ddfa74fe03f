package ca

import (
	"fmt"
	"strings"

	"go.yaml.in/yaml/v3"
)

// kubeconfigFileFields are the kubeconfig fields that make a client read a
// file or run a program: a stored kubeconfig with any of them would have the
// server read its own files (and send them to the kubeconfig's server) or
// run a command chosen by whoever registered the cluster.
var kubeconfigFileFields = []string{
	"tokenFile", "client-certificate", "client-key", "certificate-authority",
	"exec", "auth-provider",
}

// CheckKubeconfigFileRefs refuses a kubeconfig that names a file or a
// program (tokenFile, client-certificate, client-key,
// certificate-authority, exec, auth-provider) anywhere in it. A kubeconfig
// stored for TokenReview must carry its credentials and CA inline (token,
// client-certificate-data, client-key-data, certificate-authority-data).
//
// Keys are matched case-insensitively, as Kubernetes' decoders may, and
// wherever they appear, so a spelling the client would still honour cannot
// slip past.
func CheckKubeconfigFileRefs(kubeconfig []byte) error {
	var doc yaml.Node
	if err := yaml.Unmarshal(kubeconfig, &doc); err != nil {
		return fmt.Errorf("the kubeconfig is not valid YAML: %v", err)
	}
	var found []string
	var walk func(n *yaml.Node, path string, depth int)
	walk = func(n *yaml.Node, path string, depth int) {
		if depth > maxKubeconfigDepth {
			return
		}
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				walk(c, path, depth+1)
			}
		case yaml.SequenceNode:
			for i, c := range n.Content {
				walk(c, fmt.Sprintf("%s[%s]", path, itemName(c, i)), depth+1)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				key, val := n.Content[i], n.Content[i+1]
				at := strings.TrimPrefix(path+"."+key.Value, ".")
				for _, f := range kubeconfigFileFields {
					if strings.EqualFold(key.Value, f) && !isEmptyNode(val) {
						found = append(found, at)
					}
				}
				walk(val, at, depth+1)
			}
		case yaml.AliasNode:
			if n.Alias != nil {
				walk(n.Alias, path, depth+1)
			}
		}
	}
	walk(&doc, "", 0)
	if len(found) > maxListedRefs {
		found = append(found[:maxListedRefs], fmt.Sprintf("and %d more", len(found)-maxListedRefs))
	}
	if len(found) > 0 {
		return fmt.Errorf("the kubeconfig names files or programs (%s), which meshroot does not read or run for a stored kubeconfig: embed the data instead (kubectl config view --raw --minify --flatten, or kubectl config set-credentials --embed-certs) and use token, not tokenFile",
			strings.Join(found, ", "))
	}
	return nil
}

// isEmptyNode reports whether n is a null or empty scalar (a field present
// but unset, which reads no file).
func isEmptyNode(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && (n.Value == "" || n.Tag == "!!null")
}

// maxKubeconfigDepth bounds how deep the check descends (kubeconfigs are
// about five levels deep; aliases could otherwise loop).
const maxKubeconfigDepth = 32

// maxListedRefs and maxQuotedName bound what a refusal quotes.
const (
	maxListedRefs = 8
	maxQuotedName = 64
)

// itemName names sequence item n: its "name" field, else its index.
func itemName(n *yaml.Node, i int) string {
	if n.Kind == yaml.MappingNode {
		for j := 0; j+1 < len(n.Content); j += 2 {
			if n.Content[j].Value == "name" && n.Content[j+1].Kind == yaml.ScalarNode {
				name := n.Content[j+1].Value
				if len(name) > maxQuotedName {
					name = name[:maxQuotedName] + "..."
				}
				return fmt.Sprintf("%q", name)
			}
		}
	}
	return fmt.Sprint(i)
}
