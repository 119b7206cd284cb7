// Package fleet runs one rollout for N shadowproxy replicas, coordinated
// through etcd: no home-made consensus, no gossip.
//
// Every member registers under the fleet's prefix with a lease (its admin
// URL and the hash of each route's rollout policy), and campaigns for
// leadership with etcd's concurrency primitives. Rollout state (step, share,
// paused, halted, hold clock, breach streaks) lives in etcd, one key per
// route, written only with revision-checked transactions; every member
// watches it and applies a change to its split. Only the leader evaluates,
// on the recorder windows of every live member merged exactly, and its
// writes are fenced by its leadership key, so a deposed leader cannot
// overwrite its successor.
//
// Keys under the prefix P:
//
//	P/members/<name>  MemberInfo (JSON), attached to the member's lease
//	P/leader/<lease>  the election (concurrency.Election); value: member name
//	P/state/<route>   RouteState (JSON)
//
// Nothing secret is written to etcd: members fetch each other's windows
// over the admin API with the admin token, which never leaves the config.
package fleet
