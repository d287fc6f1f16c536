package runtime

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// A containerd left running on the data dir by an agent that died is
// stopped before a new one starts (two cannot share a root), and the
// supervisor's own containerd is gone once its context ended.
func TestContainerdReplacesStaleAndStopsOnCancel(t *testing.T) {
	env := newTestEnv(t)
	dir := filepath.Join(env.dataDir, "containerd")

	// An earlier agent's containerd, still running: started here by hand
	// with the config the supervisor writes.
	ctx, cancel := context.WithCancel(context.Background())
	first, err := StartContainerd(ctx, dir, env.log)
	if err != nil {
		t.Fatalf("StartContainerd: %v", err)
	}
	cancel()
	<-first.Done()
	stale := exec.Command("containerd", "--config", filepath.Join(dir, containerdConfigFile))
	if err := stale.Start(); err != nil {
		t.Fatal(err)
	}
	staleExited := make(chan struct{})
	go func() {
		stale.Wait()
		close(staleExited)
	}()
	t.Cleanup(func() {
		stale.Process.Kill()
		<-staleExited
	})
	if err := os.WriteFile(filepath.Join(dir, containerdPIDFile), []byte(strconv.Itoa(stale.Process.Pid)), 0o600); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for ping(t.Context(), first.Address()) != nil {
		if time.Now().After(deadline) {
			t.Fatal("the stale containerd never answered")
		}
		time.Sleep(50 * time.Millisecond)
	}

	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	second, err := StartContainerd(ctx, dir, env.log)
	if err != nil {
		t.Fatalf("StartContainerd over a stale containerd: %v", err)
	}
	select {
	case <-staleExited:
	case <-time.After(5 * time.Second):
		t.Error("the stale containerd is still running")
	}
	if err := ping(t.Context(), second.Address()); err != nil {
		t.Errorf("the new containerd does not answer: %v", err)
	}
	data, _ := os.ReadFile(filepath.Join(dir, containerdPIDFile))
	pid, _ := strconv.Atoi(string(data))
	cancel()
	select {
	case <-second.Done():
	case <-time.After(15 * time.Second):
		t.Fatal("the supervisor did not stop containerd after its context ended")
	}
	if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err == nil {
		t.Errorf("containerd %d still runs after Done", pid)
	}
}
