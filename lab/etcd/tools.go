//go:build tools

// Package tools pins the command the lab builds from this module; build.sh compiles it.
package tools

import _ "go.etcd.io/etcd/server/v3"
