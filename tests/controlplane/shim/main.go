// Command containerd-shim-runc-v2 is containerd's runc shim, built from the same
// module as the node's other programs so that both use one containerd release.
// It stays a binary of its own: containerd starts it by this name for every pod.
package main

import (
	"context"

	"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2/manager"
	_ "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2/task/plugin"
	"github.com/containerd/containerd/v2/pkg/shim"
)

func main() {
	shim.Run(context.Background(), manager.NewShimManager("io.containerd.runc.v2"))
}
