package rollout

// TestResult is one statistical test in an explanation.
type TestResult struct {
	// Name is "msprt": the mixture sequential probability ratio test each
	// rate and latency condition runs (seq.go).
	Name string `json:"name"`
	// Statistic is the e-value: the mixture likelihood ratio so far.
	Statistic float64 `json:"statistic"`
	// PValue is the always-valid p-value, 1/e (capped at 1).
	PValue float64 `json:"p_value"`
}
