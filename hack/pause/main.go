// Command pause is the pod sandbox process of the test cluster's real node.
//
// Why our own: registry.k8s.io/pause cannot be pulled on a machine without a
// registry, and the sandbox only needs a process that holds the pod's namespaces,
// reaps the zombies of processes that share its PID namespace, and exits promptly
// when the kubelet stops the sandbox. A static Go binary in a FROM scratch image
// does exactly that (hack/build-images.sh).
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range signals {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		// Reap every child that has exited; there may be more than one per SIGCHLD.
		for {
			var status syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
