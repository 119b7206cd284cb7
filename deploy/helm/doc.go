// Package helm holds the tests of the shadowproxy Helm chart
// (deploy/helm/shadowproxy). It is its own Go module because rendering the
// chart needs Helm's Go packages, which bring Kubernetes' client libraries:
// kept out of the main module, they neither grow its go.mod nor slow every
// build of the proxy. The tests render the chart with Helm's own loader and
// engine for each values file in shadowproxy/ci and check the objects
// against the binary's configuration loader and admin handler.
package helm
