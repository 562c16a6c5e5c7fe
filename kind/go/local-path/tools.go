//go:build tools

// Package tools pins Rancher's local-path-provisioner, the storage provisioner kind's node image
// carries (the default StorageClass); kind/build.sh compiles it.
package tools

import _ "github.com/rancher/local-path-provisioner"
