package runtime

import (
	"context"
	"fmt"
	"sort"

	containerd "github.com/containerd/containerd"
	"k8s.io/apimachinery/pkg/types"
)

// RunningPod is a pod as containerd holds it.
type RunningPod struct {
	UID       types.UID
	Namespace string
	Name      string
	// SandboxID is the pause container's ID; empty when it is gone.
	SandboxID  string
	Containers []RunningContainer
}

// RunningContainer is one container of a RunningPod.
type RunningContainer struct {
	ID           string
	Name         string // the spec's name; empty for the pause container
	Kind         string // "sandbox", "init" or "app"
	RestartCount int
	Running      bool
}

// ListPods lists the pods of this node that containerd holds, running or
// not, found by the labels the runtime puts on every container. The agent
// compares it with the pods bound to the node: those it should run it
// syncs (and they are adopted), the others it kills.
func (r *Runtime) ListPods(ctx context.Context) ([]RunningPod, error) {
	ctx = r.nsCtx(ctx)
	found, err := r.listContainers(ctx, fmt.Sprintf(`labels.%q==%q`, labelNode, r.cfg.NodeName))
	if err != nil {
		return nil, err
	}
	byUID := map[types.UID]*RunningPod{}
	for _, fc := range found {
		uid := types.UID(fc.labels[labelPodUID])
		if uid == "" {
			continue
		}
		p, ok := byUID[uid]
		if !ok {
			p = &RunningPod{UID: uid, Namespace: fc.labels[labelPodNamespace], Name: fc.labels[labelPodName]}
			byUID[uid] = p
		}
		_, status := r.loadTask(ctx, fc.container)
		rc := RunningContainer{ID: fc.container.ID(), Name: fc.name, Kind: fc.kind, RestartCount: fc.attempt, Running: status == containerd.Running}
		if fc.kind == kindSandbox {
			p.SandboxID = rc.ID
		}
		p.Containers = append(p.Containers, rc)
	}
	pods := make([]RunningPod, 0, len(byUID))
	for _, p := range byUID {
		sort.Slice(p.Containers, func(i, j int) bool { return p.Containers[i].ID < p.Containers[j].ID })
		pods = append(pods, *p)
	}
	sort.Slice(pods, func(i, j int) bool { return pods[i].UID < pods[j].UID })
	return pods, nil
}
