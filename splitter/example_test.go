package splitter_test

import (
	"fmt"
	"net"

	"github.com/valyala/fasthttp"

	"github.com/shadowproxy/shadowproxy/splitter"
)

// The bucket recipe other systems must reproduce:
// XXH64(salt + ":" + key, seed 0) mod 10000. These vectors are the contract.
func ExampleBucket() {
	for _, v := range []struct{ salt, key string }{
		{"api-v2", "user-42"},
		{"api-v2", "alice@example.com"},
		{"checkout", "8f14e45f"},
		{"api-v2:shadow", "user-42"},
	} {
		fmt.Printf("%s:%s hash=%d bucket=%d\n", v.salt, v.key,
			splitter.Hash64(v.salt, []byte(v.key)), splitter.Bucket(v.salt, []byte(v.key)))
	}
	// Output:
	// api-v2:user-42 hash=17157458795751962486 bucket=2486
	// api-v2:alice@example.com hash=8160237497738596590 bucket=6590
	// checkout:8f14e45f hash=783624458019418977 bucket=8977
	// api-v2:shadow:user-42 hash=10534139329229421487 bucket=1487
}

func ExampleSplitter_Decide() {
	s, err := splitter.Compile(splitter.Spec{
		Key:     "header:X-User-ID",
		Salt:    "api-v2",
		To:      "v2",
		Percent: 2500, // 25%
		Cohorts: []splitter.CohortSpec{
			{Name: "internal", When: splitter.Conditions{Header: map[string]string{"X-Internal": "true"}}},
		},
	}, "api", "v1", nil)
	if err != nil {
		panic(err)
	}
	peer := net.ParseIP("192.0.2.1")

	var req fasthttp.Request
	req.Header.Set("X-User-ID", "user-42") // bucket 2486: in the canary from 24.87%
	d := s.Decide(&req, peer)
	fmt.Println(s.Target(d), d.Reason)

	s.SetPercent(2486) // one basis point lower
	d = s.Decide(&req, peer)
	fmt.Println(s.Target(d), d.Reason)

	req.Header.Set("X-Internal", "true")
	d = s.Decide(&req, peer)
	fmt.Println(s.Target(d), d.Reason, s.CohortNames()[d.Cohort])

	s.SetHalted(true) // roll back: everyone to stable
	d = s.Decide(&req, peer)
	fmt.Println(s.Target(d), d.Reason)
	// Output:
	// v2 percent
	// v1 percent
	// v2 cohort internal
	// v1 halted
}
