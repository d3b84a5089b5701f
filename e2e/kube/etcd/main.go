// Command etcd runs the etcd server that the end-to-end harness uses.
// Debian's etcd is older than Kubernetes supports, so the harness builds
// this version-matched one instead.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
