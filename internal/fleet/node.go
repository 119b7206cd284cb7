package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"

	"github.com/shadowproxy/shadowproxy/internal/metrics"
)

// MemberInfo is what a member publishes about itself. It holds no secret.
type MemberInfo struct {
	Name      string `json:"name"`
	Advertise string `json:"advertise"`
	// Policies maps each rollout route to the hash of its policy, so the
	// leader can tell when members disagree (a rolling config change).
	Policies  map[string]string `json:"policies"`
	StartedAt time.Time         `json:"started_at"`
}

// Options configure a Node.
type Options struct {
	// Client is the etcd client (see NewClient); the Node does not close it.
	Client *clientv3.Client
	// Prefix scopes the fleet, such as /shadowproxy/prod.
	Prefix string
	// Name and Advertise identify this member.
	Name, Advertise string
	// LeaseTTL bounds how long a dead member (or leader) stays registered.
	LeaseTTL time.Duration
	// Policies returns the current route → policy hash map; it is
	// re-published by Republish after a reload.
	Policies func() map[string]string
	// OnState receives every route state the fleet holds and every change
	// of it (from the watch), in revision order per route.
	OnState func(Versioned)
	Logger  *zap.Logger
	Metrics *metrics.Fleet
	// Poll is how often etcd health, the leader and the member list are
	// read (default 500ms).
	Poll time.Duration
}

// Node is this process's membership in a fleet.
type Node struct {
	opts  Options
	log   *zap.Logger
	store *Store

	started  time.Time
	etcdUp   atomic.Bool
	isLeader atomic.Bool
	// leaderFence is the revision-checked condition on the leader key, set
	// while this member is the leader.
	leaderFence atomic.Pointer[clientv3.Cmp]
	republish   chan struct{}
	synced      chan struct{}
	syncOnce    sync.Once

	mu      sync.Mutex
	leader  string
	members []MemberInfo
	applied map[string]int64

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New returns a Node; Start joins the fleet.
func New(opts Options) (*Node, error) {
	switch {
	case opts.Client == nil:
		return nil, errors.New("fleet: no etcd client")
	case opts.Name == "" || strings.Contains(opts.Name, "/"):
		return nil, fmt.Errorf("fleet: invalid member name %q", opts.Name)
	case opts.LeaseTTL < time.Second:
		return nil, fmt.Errorf("fleet: lease TTL %s below 1s", opts.LeaseTTL)
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.Poll <= 0 {
		opts.Poll = 500 * time.Millisecond
	}
	if opts.Policies == nil {
		opts.Policies = func() map[string]string { return nil }
	}
	n := &Node{opts: opts, log: opts.Logger.Named("fleet").With(zap.String("member", opts.Name)),
		store: NewStore(opts.Client, opts.Prefix), started: time.Now(),
		republish: make(chan struct{}, 1), synced: make(chan struct{}), applied: map[string]int64{}}
	n.store.fence = func() (clientv3.Cmp, bool) {
		c := n.leaderFence.Load()
		if c == nil || !n.isLeader.Load() {
			return clientv3.Cmp{}, false
		}
		return *c, true
	}
	return n, nil
}

func (n *Node) prefix() string { return strings.TrimRight(n.opts.Prefix, "/") }

// Name is this member's name.
func (n *Node) Name() string { return n.opts.Name }

// Store is the fleet's rollout state. Writes through it are fenced: they
// succeed only while this member is the leader. Commands from any member
// use CommandStore.
func (n *Node) Store() *Store { return n.store }

// CommandStore writes without the leader fence, for operator commands
// (pause, resume, promote, rollback) sent to any member; the revision check
// still orders them with the leader's writes.
func (n *Node) CommandStore() *Store { return NewStore(n.opts.Client, n.opts.Prefix) }

// IsLeader reports whether this member is the leader now.
func (n *Node) IsLeader() bool { return n.isLeader.Load() }

// EtcdUp reports whether the last request to etcd succeeded.
func (n *Node) EtcdUp() bool { return n.etcdUp.Load() }

// Start joins the fleet in the background: membership and campaign,
// health polling and the state watch. It returns at once.
func (n *Node) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	n.wg.Add(3)
	go func() { defer n.wg.Done(); n.campaignLoop(ctx) }()
	go func() { defer n.wg.Done(); n.pollLoop(ctx) }()
	go func() {
		defer n.wg.Done()
		n.store.Watch(ctx, n.deliver, func() { n.syncOnce.Do(func() { close(n.synced) }) })
	}()
}

// WaitSynced blocks until the fleet's state has been read once (and handed
// to OnState), so a member joining late adopts it before serving.
func (n *Node) WaitSynced(ctx context.Context) error {
	select {
	case <-n.synced:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("fleet state not read from etcd: %w", ctx.Err())
	}
}

// Republish publishes the member record again (after a reload changed the
// policies).
func (n *Node) Republish() {
	select {
	case n.republish <- struct{}{}:
	default:
	}
}

// Close leaves the fleet: resigns leadership and revokes the lease, so the
// others elect a new leader at once instead of after the TTL.
func (n *Node) Close() {
	if n.cancel != nil {
		n.cancel()
		n.wg.Wait()
	}
	n.setLeader(false)
}

func (n *Node) deliver(v Versioned) {
	n.mu.Lock()
	if n.applied[v.Route] >= v.Rev {
		n.mu.Unlock()
		return
	}
	n.applied[v.Route] = v.Rev
	n.mu.Unlock()
	if n.opts.OnState != nil {
		n.opts.OnState(v)
	}
}

func (n *Node) setLeader(on bool) {
	if n.isLeader.Swap(on) != on {
		n.log.Info("fleet leadership changed", zap.Bool("leader", on))
	}
	if !on {
		n.leaderFence.Store(nil)
	}
	if m := n.opts.Metrics; m != nil {
		m.IsLeader.Set(b2f(on))
	}
}

func (n *Node) setUp(up bool) {
	if n.etcdUp.Swap(up) != up {
		if up {
			n.log.Info("etcd reachable again: the fleet resumes")
		} else {
			n.log.Warn("etcd unreachable: serving the last known shares, no rollout transitions until it returns")
		}
	}
	if m := n.opts.Metrics; m != nil {
		m.EtcdUp.Set(b2f(up))
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// campaignLoop keeps a session (lease), the member record on it and a
// campaign for leadership; when the session dies (etcd unreachable past the
// TTL) it starts over with a new one.
func (n *Node) campaignLoop(ctx context.Context) {
	ttl := int(n.opts.LeaseTTL / time.Second)
	for ctx.Err() == nil {
		if err := n.session(ctx, ttl); err != nil && ctx.Err() == nil {
			n.log.Debug("fleet session ended", zap.Error(err))
			sleep(ctx, 200*time.Millisecond)
		}
	}
}

func (n *Node) session(ctx context.Context, ttl int) error {
	cli := n.opts.Client
	gctx, gcancel := context.WithTimeout(ctx, n.opts.LeaseTTL)
	lease, err := cli.Grant(gctx, int64(ttl))
	gcancel()
	if err != nil {
		return fmt.Errorf("grant lease: %w", err)
	}
	sess, err := concurrency.NewSession(cli, concurrency.WithLease(lease.ID), concurrency.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("session: %w", err)
	}
	defer func() {
		n.setLeader(false)
		// Revoke so the others see this member leave now (best effort:
		// when etcd is down the lease simply expires).
		rctx, rcancel := context.WithTimeout(context.Background(), time.Second)
		_, _ = cli.Revoke(rctx, sess.Lease())
		rcancel()
		sess.Orphan()
	}()
	if err := n.register(ctx, sess.Lease()); err != nil {
		return err
	}
	el := concurrency.NewElection(sess, n.prefix()+"/leader")
	won := make(chan error, 1)
	cctx, ccancel := context.WithCancel(ctx)
	defer ccancel()
	go func() { won <- el.Campaign(cctx, n.opts.Name) }()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-sess.Done():
			return errors.New("lease lost")
		case <-n.republish:
			if err := n.register(ctx, sess.Lease()); err != nil {
				n.log.Warn("republishing member record failed", zap.Error(err))
			}
		case err := <-won:
			if err != nil {
				return fmt.Errorf("campaign: %w", err)
			}
			cmp := clientv3.Compare(clientv3.CreateRevision(el.Key()), "=", el.Rev())
			n.leaderFence.Store(&cmp)
			n.setLeader(true)
		}
	}
}

func (n *Node) register(ctx context.Context, lease clientv3.LeaseID) error {
	b, err := json.Marshal(MemberInfo{Name: n.opts.Name, Advertise: n.opts.Advertise, Policies: n.opts.Policies(), StartedAt: n.started})
	if err != nil {
		return err
	}
	pctx, cancel := context.WithTimeout(ctx, n.opts.LeaseTTL)
	defer cancel()
	if _, err := n.opts.Client.Put(pctx, n.prefix()+"/members/"+n.opts.Name, string(b), clientv3.WithLease(lease)); err != nil {
		return fmt.Errorf("register member: %w", err)
	}
	return nil
}

// pollLoop reads the leader and the member list every Poll; its success is
// what etcd_up reports.
func (n *Node) pollLoop(ctx context.Context) {
	t := time.NewTicker(n.opts.Poll)
	defer t.Stop()
	for {
		n.poll(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (n *Node) poll(ctx context.Context) {
	pctx, cancel := context.WithTimeout(ctx, max(n.opts.Poll, time.Second))
	defer cancel()
	resp, err := n.opts.Client.Txn(pctx).Then(
		clientv3.OpGet(n.prefix()+"/leader/", clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend), clientv3.WithLimit(1)),
		clientv3.OpGet(n.prefix()+"/members/", clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		if ctx.Err() == nil {
			n.setUp(false)
		}
		return
	}
	n.setUp(true)
	var leader string
	if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
		leader = string(kvs[0].Value)
	}
	var members []MemberInfo
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		var m MemberInfo
		if err := json.Unmarshal(kv.Value, &m); err != nil {
			n.log.Warn("ignoring unreadable member record", zap.ByteString("key", kv.Key), zap.Error(err))
			continue
		}
		members = append(members, m)
	}
	sort.Slice(members, func(i, j int) bool { return members[i].Name < members[j].Name })
	n.mu.Lock()
	n.leader, n.members = leader, members
	n.mu.Unlock()
	if m := n.opts.Metrics; m != nil {
		m.Members.Set(float64(len(members)))
	}
}

// Members returns the members as last read from etcd, sorted by name.
func (n *Node) Members() []MemberInfo {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]MemberInfo(nil), n.members...)
}

// Leader names the leader as last read from etcd ("" when none).
func (n *Node) Leader() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.leader
}

// Status is GET /api/v1/fleet.
type Status struct {
	Name     string         `json:"name"`
	Leader   string         `json:"leader"`
	IsLeader bool           `json:"is_leader"`
	Members  []MemberStatus `json:"members"`
	// Etcd is "up" or "down".
	Etcd string `json:"etcd"`
}

// MemberStatus is one member in Status.
type MemberStatus struct {
	Name      string            `json:"name"`
	Advertise string            `json:"advertise"`
	Leader    bool              `json:"leader"`
	Policies  map[string]string `json:"policies"`
	StartedAt time.Time         `json:"started_at"`
}

// Status reports the fleet as this member sees it.
func (n *Node) Status() Status {
	n.mu.Lock()
	defer n.mu.Unlock()
	s := Status{Name: n.opts.Name, Leader: n.leader, IsLeader: n.isLeader.Load(), Etcd: "down", Members: []MemberStatus{}}
	if n.etcdUp.Load() {
		s.Etcd = "up"
	}
	for _, m := range n.members {
		s.Members = append(s.Members, MemberStatus{Name: m.Name, Advertise: m.Advertise, Leader: m.Name == n.leader, Policies: m.Policies, StartedAt: m.StartedAt})
	}
	return s
}
