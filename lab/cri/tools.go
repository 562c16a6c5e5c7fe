//go:build tools

// Package tools pins crictl, which the lab uses to stop the node's pods cleanly; build.sh compiles it.
package tools

import _ "sigs.k8s.io/cri-tools/cmd/crictl"
