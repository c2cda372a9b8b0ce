// CoreDNS with only the plugins the local stack's Corefile uses (hack/node.sh): the cluster
// domain from the API server, nothing that forwards or reaches a cloud. The full build's
// core/plugin imports every plugin (and the AWS, Azure and Google SDKs).
package main

import (
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/template"
)

func main() {
	coremain.Run()
}
