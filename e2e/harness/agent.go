package harness

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/authwatch/authwatch/e2e/nodeagent"
)

// agentRun is a node agent the cluster runs and stops.
type agentRun struct {
	agent  *nodeagent.Agent
	cancel context.CancelFunc
	done   chan error
}

// AgentOptions configure StartNodeAgent. The zero value starts one node,
// "node-1".
type AgentOptions struct {
	Nodes []string
	// RestartDelay is the pause before a container restarts; zero is 1s.
	RestartDelay time.Duration
	// VolumeSyncPeriod is how often Secret and ConfigMap volume files are
	// refreshed; zero is 2s.
	VolumeSyncPeriod time.Duration
	// Logger receives the agent's log; nil discards it.
	Logger *slog.Logger
}

// StartNodeAgent runs a node agent in this process, authenticated as
// NodeAgentUser and serving the kubelet API on a free loopback port with a
// certificate from the cluster CA, and waits until its Nodes are Ready.
// Stop ends it; it also ends when ctx does.
func (c *Cluster) StartNodeAgent(ctx context.Context, opts AgentOptions) (*nodeagent.Agent, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	cert, err := c.ca.issueTLS(c.nextSerial(), "authwatch-node-agent", nil, []net.IP{net.ParseIP("127.0.0.1")})
	if err != nil {
		return nil, fmt.Errorf("harness: issue node agent certificate: %w", err)
	}
	cfg := &rest.Config{
		Host:            c.Server(),
		BearerToken:     c.tokens[NodeAgentUser],
		TLSClientConfig: rest.TLSClientConfig{CAData: c.ca.certPEM},
		QPS:             50,
		Burst:           100,
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("harness: node agent client: %w", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("harness: node agent listener: %w", err)
	}
	agent, err := nodeagent.New(nodeagent.Options{
		Client:           client,
		Nodes:            opts.Nodes,
		Listener:         l,
		ServingCert:      cert,
		ClientCAs:        c.ca.pool(),
		Logger:           opts.Logger,
		RestartDelay:     opts.RestartDelay,
		VolumeSyncPeriod: opts.VolumeSyncPeriod,
	})
	if err != nil {
		l.Close()
		return nil, fmt.Errorf("harness: %w", err)
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	run := &agentRun{agent: agent, cancel: cancel, done: make(chan error, 1)}
	go func() { run.done <- agent.Run(runCtx) }()
	context.AfterFunc(ctx, cancel)

	c.agentsMu.Lock()
	c.agents = append(c.agents, run)
	c.agentsMu.Unlock()

	nodes := opts.Nodes
	if len(nodes) == 0 {
		nodes = []string{"node-1"}
	}
	for _, name := range nodes {
		err := WaitFor(ctx, 30*time.Second, "node "+name+" Ready", func(ctx context.Context) (bool, error) {
			select {
			case err := <-run.done:
				run.done <- err
				return false, fmt.Errorf("%w: node agent stopped: %v", ErrStopWaiting, err)
			default:
			}
			n, err := c.client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			for _, cond := range n.Status.Conditions {
				if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
					return true, nil
				}
			}
			return false, nil
		})
		if err != nil {
			return nil, err
		}
	}
	return agent, nil
}

func (c *Cluster) stopAgents() error {
	c.agentsMu.Lock()
	agents := c.agents
	c.agents = nil
	c.agentsMu.Unlock()
	var errs []error
	for _, run := range agents {
		run.cancel()
		select {
		case err := <-run.done:
			if err != nil {
				errs = append(errs, err)
			}
		case <-time.After(30 * time.Second):
			errs = append(errs, errors.New("harness: node agent did not stop within 30s"))
		}
	}
	return errors.Join(errs...)
}
