package leader

import (
	"context"

	"k8s.io/client-go/tools/leaderelection/resourcelock"

	"github.com/authwatch/authwatch/internal/permission"
)

// leaseAccesses are the requests that leader election makes on the Lease.
var leaseAccesses = []permission.Access{
	{Verb: permission.Get, Resource: permission.Leases},
	{Verb: permission.Create, Resource: permission.Leases},
	{Verb: permission.Update, Resource: permission.Leases},
}

// reportingLock passes every call to the Lease lock and reports the ones
// that the API server rejects with 403 Forbidden. client-go's leader
// election only logs such an error through klog and retries, so without
// this a ServiceAccount that lacks a Lease rule shows up nowhere else.
type reportingLock struct {
	resourcelock.Interface
	perm      *permission.Reporter
	namespace string
}

func (l *reportingLock) Get(ctx context.Context) (*resourcelock.LeaderElectionRecord, []byte, error) {
	rec, raw, err := l.Interface.Get(ctx)
	l.perm.Report(err, leaseAccesses[0], l.namespace)
	return rec, raw, err
}

func (l *reportingLock) Create(ctx context.Context, ler resourcelock.LeaderElectionRecord) error {
	err := l.Interface.Create(ctx, ler)
	l.perm.Report(err, leaseAccesses[1], l.namespace)
	return err
}

func (l *reportingLock) Update(ctx context.Context, ler resourcelock.LeaderElectionRecord) error {
	err := l.Interface.Update(ctx, ler)
	l.perm.Report(err, leaseAccesses[2], l.namespace)
	return err
}
