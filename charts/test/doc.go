// Package charttest tests the Helm chart in charts/sluice offline: it lints
// and renders the chart in-process with Helm's Go packages over every values
// file in charts/sluice/ci, decodes every manifest strictly into the
// Kubernetes, prometheus-operator and KEDA Go types, checks what the
// manifests mean (selectors, probe ports, secret keys, grace periods,
// autoscaling ceilings, security contexts, the topics hook), that the
// schema refuses bad values with a message a user understands, and that
// the settings the chart offers are the services' real ones.
package charttest
