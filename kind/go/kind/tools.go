//go:build tools

// Package tools pins kind, the CLI that creates clusters from kind/'s node image; kind/build.sh compiles it.
package tools

import _ "sigs.k8s.io/kind"
