package kubectl

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func configMap(ns, name, data string) string {
	return "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: " + name + "\n  namespace: " + ns + "\ndata: {" + data + "}\n"
}

// TestCreateApply: create -f and apply -f with kubectl's default
// validation (strict, done by the server): valid manifests are written,
// an unknown field is refused and named, and apply of a changed manifest
// updates the object.
func TestCreateApply(t *testing.T) {
	t.Parallel()
	ns := namespace(t, "create-apply")

	t.Run("create", func(t *testing.T) {
		f := writeFile(t, "c1.yaml", configMap(ns, "c1", "a: '1'"))
		wantOutput(t, "configmap/c1 created\n", "create", "-f", f)
		wantOutput(t, "1", "get", "configmap", "c1", "-n", ns, "-o", "jsonpath={.data.a}")
		wantFails(t, []string{`Error from server (AlreadyExists): error when creating "` + f + `": configmaps "c1" already exists`}, "create", "-f", f)
	})

	t.Run("unknown field", func(t *testing.T) {
		bad := writeFile(t, "bad.yaml", configMap(ns, "bad", "a: '1'")+"bogus: 1\n")
		for _, verb := range []string{"create", "apply"} {
			wantFails(t, []string{`error when creating "` + bad + `"`, `unknown field "bogus"`}, verb, "-f", bad)
		}
		dep := strings.Replace(deployment(ns, "bad", "skep/echo:v1", 1, ""), "containers: [{name: main,", "containers: [{name: main, imagePullPolicyy: Always,", 1)
		badDep := writeFile(t, "bad-dep.yaml", dep)
		for _, verb := range []string{"create", "apply"} {
			wantFails(t, []string{`unknown field "spec.template.spec.containers[0].imagePullPolicyy"`}, verb, "-f", badDep)
		}
		r := kubectl(t, "get", "configmap,deployment", "bad", "-n", ns)
		if r.Err == nil || !strings.Contains(r.Stderr, `configmaps "bad" not found`) {
			t.Errorf("a refused manifest was written:\n%s", r)
		}
		// --validate=false sends the field and the server drops it.
		wantOutput(t, "configmap/bad created\n", "create", "--validate=false", "-f", bad)
	})

	t.Run("invalid value", func(t *testing.T) {
		f := writeFile(t, "bad-name.yaml", configMap(ns, "Bad_Name", "a: '1'"))
		wantFails(t, []string{`The ConfigMap "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name"`}, "create", "-f", f)
	})

	t.Run("apply", func(t *testing.T) {
		dir := t.TempDir()
		f := filepath.Join(dir, "a1.yaml")
		write := func(data string) {
			if err := os.WriteFile(f, []byte(configMap(ns, "a1", data)), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		write("a: '1', b: '2'")
		wantOutput(t, "configmap/a1 created\n", "apply", "-f", f)
		wantOutput(t, "configmap/a1 unchanged\n", "apply", "-f", f)
		write("a: '3'")
		wantOutput(t, "configmap/a1 configured\n", "apply", "-f", f)
		// apply removes what the previous apply set and this one does not.
		wantOutput(t, `{"a":"3"}`, "get", "configmap", "a1", "-n", ns, "-o", "jsonpath={.data}")
		out := mustKubectl(t, "apply", "view-last-applied", "configmap/a1", "-n", ns)
		wantContains(t, "kubectl apply view-last-applied", out, "data:\n  a: \"3\"\n")
		// A Deployment changed and applied again rolls.
		d := writeFile(t, "d.yaml", deployment(ns, "ad", "skep/echo:v1", 1, ""))
		wantOutput(t, "deployment.apps/ad created\n", "apply", "-f", d)
		d2 := writeFile(t, "d2.yaml", deployment(ns, "ad", "skep/echo:v2", 1, ""))
		wantOutput(t, "deployment.apps/ad configured\n", "apply", "-f", d2)
		wantOutput(t, "skep/echo:v2", "get", "deployment", "ad", "-n", ns, "-o", "jsonpath={.spec.template.spec.containers[0].image}")
		wantOutput(t, "deployment.apps/ad configured (server dry run)\n", "apply", "-f", d, "--dry-run=server")
		wantOutput(t, "skep/echo:v2", "get", "deployment", "ad", "-n", ns, "-o", "jsonpath={.spec.template.spec.containers[0].image}")
	})
}

// TestServerSideApply: apply --server-side records the field manager, a
// second manager setting the same field is refused naming the conflict,
// and --force-conflicts takes the field over.
func TestServerSideApply(t *testing.T) {
	t.Parallel()
	ns := namespace(t, "ssa")
	f := writeFile(t, "ssa.yaml", configMap(ns, "ssa", "a: '1'"))
	wantOutput(t, "configmap/ssa serverside-applied\n", "apply", "--server-side", "-f", f)
	wantOutput(t, "kubectl:Apply", "get", "configmap", "ssa", "-n", ns, "--show-managed-fields", "-o", "jsonpath={.metadata.managedFields[0].manager}:{.metadata.managedFields[0].operation}")

	other := writeFile(t, "other.yaml", configMap(ns, "ssa", "a: '2'"))
	wantFails(t, []string{`error: Apply failed with 1 conflict: conflict with "kubectl": .data.a`, "--force-conflicts"},
		"apply", "--server-side", "--field-manager=other", "-f", other)
	wantOutput(t, "1", "get", "configmap", "ssa", "-n", ns, "-o", "jsonpath={.data.a}")

	wantOutput(t, "configmap/ssa serverside-applied\n", "apply", "--server-side", "--field-manager=other", "--force-conflicts", "-f", other)
	wantOutput(t, "2", "get", "configmap", "ssa", "-n", ns, "-o", "jsonpath={.data.a}")
	out := mustKubectl(t, "get", "configmap", "ssa", "-n", ns, "--show-managed-fields", "-o", "yaml")
	wantContains(t, "configmap ssa's managedFields", out, "manager: other\n", "operation: Apply\n", "f:a: {}\n")

	// A field no one else manages: no conflict, and both managers' fields stay.
	both := writeFile(t, "both.yaml", configMap(ns, "ssa", "b: 'x'"))
	wantOutput(t, "configmap/ssa serverside-applied\n", "apply", "--server-side", "--field-manager=third", "-f", both)
	wantOutput(t, `{"a":"2","b":"x"}`, "get", "configmap", "ssa", "-n", ns, "-o", "jsonpath={.data}")
}

// TestDiff: kubectl diff shows what apply would change (by a server dry
// run) and exits 1, or nothing and 0.
func TestDiff(t *testing.T) {
	t.Parallel()
	ns := namespace(t, "diff")
	f := writeFile(t, "d.yaml", configMap(ns, "d", "a: '1'"))
	wantOutput(t, "configmap/d created\n", "apply", "-f", f)
	wantOutput(t, "", "diff", "-f", f)

	changed := writeFile(t, "d2.yaml", configMap(ns, "d", "a: '2'"))
	r := kubectl(t, "diff", "-f", changed)
	if r.ExitCode() != 1 {
		t.Errorf("kubectl diff of a changed manifest: exit %d, want 1 (differences)\n%s", r.ExitCode(), r)
	}
	wantContains(t, "kubectl diff", r.Stdout, "-  a: \"1\"\n", "+  a: \"2\"\n", "/v1.ConfigMap."+ns+".d")
	wantOutput(t, "1", "get", "configmap", "d", "-n", ns, "-o", "jsonpath={.data.a}")

	// A new object diffs as all added.
	r = kubectl(t, "diff", "-f", writeFile(t, "new.yaml", configMap(ns, "new", "z: '9'")))
	if r.ExitCode() != 1 || !strings.Contains(r.Stdout, "+  name: new\n") {
		t.Errorf("kubectl diff of a new object: want exit 1 and the object added\n%s", r)
	}
}

// TestEdit: kubectl edit with an EDITOR script writes the change; an
// unchanged edit is cancelled.
func TestEdit(t *testing.T) {
	t.Parallel()
	ns := namespace(t, "edit")
	wantOutput(t, "configmap/ed created\n", "create", "configmap", "ed", "-n", ns, "--from-literal=a=before")
	editor := writeFile(t, "editor.sh", "#!/bin/sh\nsed -i 's/a: before/a: after/' \"$1\"\n")
	if err := os.Chmod(editor, 0o755); err != nil {
		t.Fatal(err)
	}
	withEditor := run{env: []string{"EDITOR=" + editor, "KUBE_EDITOR="}}
	r := withEditor.kubectl(t, "edit", "configmap", "ed", "-n", ns)
	if r.Err != nil || r.Stdout != "configmap/ed edited\n" {
		t.Errorf("kubectl edit: want \"configmap/ed edited\"\n%s", r)
	}
	wantOutput(t, "after", "get", "configmap", "ed", "-n", ns, "-o", "jsonpath={.data.a}")

	r = withEditor.kubectl(t, "edit", "configmap", "ed", "-n", ns)
	if r.Err != nil || !strings.Contains(r.Stdout+r.Stderr, "Edit cancelled, no changes made.") {
		t.Errorf("kubectl edit without a change: want \"Edit cancelled, no changes made.\"\n%s", r)
	}

	// An edit the server refuses: kubectl names the error and keeps a copy.
	bad := writeFile(t, "bad.sh", "#!/bin/sh\nsed -i 's/^  name: ed$/  name: Not_Valid/' \"$1\"\n")
	if err := os.Chmod(bad, 0o755); err != nil {
		t.Fatal(err)
	}
	r = run{env: []string{"EDITOR=" + bad, "KUBE_EDITOR="}}.kubectl(t, "edit", "configmap", "ed", "-n", ns)
	if r.Err == nil || !strings.Contains(r.Stderr, "A copy of your changes has been stored to") {
		t.Errorf("kubectl edit renaming the object: want it refused with a copy kept\n%s", r)
	}
}

// TestPatch: each patch type kubectl sends.
func TestPatch(t *testing.T) {
	t.Parallel()
	ns := namespace(t, "patch")
	wantOutput(t, "configmap/p created\n", "create", "configmap", "p", "-n", ns, "--from-literal=a=1")

	wantOutput(t, "configmap/p patched\n", "patch", "configmap", "p", "-n", ns, "--type=json", "-p", `[{"op":"replace","path":"/data/a","value":"json"},{"op":"add","path":"/data/j","value":"x"}]`)
	wantOutput(t, `{"a":"json","j":"x"}`, "get", "configmap", "p", "-n", ns, "-o", "jsonpath={.data}")
	wantFails(t, []string{"The request is invalid: the server rejected our request due to an error in our request"},
		"patch", "configmap", "p", "-n", ns, "--type=json", "-p", `[{"op":"remove","path":"/data/nothing"}]`)

	wantOutput(t, "configmap/p patched\n", "patch", "configmap", "p", "-n", ns, "--type=merge", "-p", `{"data":{"j":null,"m":"merge"}}`)
	wantOutput(t, `{"a":"json","m":"merge"}`, "get", "configmap", "p", "-n", ns, "-o", "jsonpath={.data}")
	wantOutput(t, "configmap/p patched (no change)\n", "patch", "configmap", "p", "-n", ns, "--type=merge", "-p", `{"data":{"m":"merge"}}`)

	// Strategic merge merges lists by their key: a container patched by
	// name keeps the others (a merge patch would replace the list).
	d := strings.Replace(deployment(ns, "pd", "skep/echo:v1", 1, ""), "containers: [{name: main, image: \"skep/echo:v1\"}]",
		"containers: [{name: main, image: \"skep/echo:v1\"}, {name: side, image: \"skep/side:v1\"}]", 1)
	wantOutput(t, "deployment.apps/pd created\n", "apply", "-f", writeFile(t, "pd.yaml", d))
	wantOutput(t, "deployment.apps/pd patched\n", "patch", "deployment", "pd", "-n", ns, "-p", `{"spec":{"template":{"spec":{"containers":[{"name":"main","image":"skep/echo:v2"}]}}}}`)
	wantOutput(t, "main=skep/echo:v2 side=skep/side:v1 ", "get", "deployment", "pd", "-n", ns, "-o", `jsonpath={range .spec.template.spec.containers[*]}{.name}={.image} {end}`)
	wantOutput(t, "deployment.apps/pd patched\n", "patch", "deployment", "pd", "-n", ns, "--type=strategic", "-p", `{"spec":{"template":{"spec":{"containers":[{"name":"side","$patch":"delete"}]}}}}`)
	wantOutput(t, "main=skep/echo:v2 ", "get", "deployment", "pd", "-n", ns, "-o", `jsonpath={range .spec.template.spec.containers[*]}{.name}={.image} {end}`)

	// --subresource=status patches the status only.
	wantOutput(t, "deployment.apps/pd patched\n", "patch", "deployment", "pd", "-n", ns, "--subresource=status", "--type=merge", "-p", `{"status":{"observedGeneration":99}}`)
}

// TestLabelAnnotate: kubectl label and annotate, with their overwrite rule.
func TestLabelAnnotate(t *testing.T) {
	t.Parallel()
	ns := namespace(t, "label")
	wantOutput(t, "configmap/l created\n", "create", "configmap", "l", "-n", ns, "--from-literal=a=1")
	wantOutput(t, "configmap/m created\n", "create", "configmap", "m", "-n", ns, "--from-literal=a=1")

	wantOutput(t, "configmap/l labeled\n", "label", "configmap", "l", "-n", ns, "env=prod")
	wantOutput(t, "configmap/l\n", "get", "configmaps", "-n", ns, "-l", "env=prod", "-o", "name")
	wantFails(t, []string{"'env' already has a value (prod), and --overwrite is false"}, "label", "configmap", "l", "-n", ns, "env=dev")
	wantOutput(t, "configmap/l labeled\n", "label", "configmap", "l", "-n", ns, "env=dev", "--overwrite")
	wantOutput(t, "configmap/l labeled\nconfigmap/m labeled\n", "label", "configmaps", "--all", "-n", ns, "tier=web")
	wantOutput(t, "configmap/l unlabeled\n", "label", "configmap", "l", "-n", ns, "env-")
	wantOutput(t, `{"tier":"web"}`, "get", "configmap", "l", "-n", ns, "-o", "jsonpath={.metadata.labels}")

	wantOutput(t, "configmap/l annotated\n", "annotate", "configmap", "l", "-n", ns, "owner=team-a")
	wantFails(t, []string{"--overwrite is false but found the following declared annotation(s): 'owner' already has a value (team-a)"}, "annotate", "configmap", "l", "-n", ns, "owner=team-b")
	wantOutput(t, "configmap/l annotated\n", "annotate", "configmap", "l", "-n", ns, "owner=team-b", "--overwrite")
	wantOutput(t, "team-b", "get", "configmap", "l", "-n", ns, "-o", `jsonpath={.metadata.annotations.owner}`)
	wantOutput(t, "configmap/l annotated\n", "annotate", "configmap", "l", "-n", ns, "owner-")
	wantOutput(t, "", "get", "configmap", "l", "-n", ns, "-o", `jsonpath={.metadata.annotations.owner}`)
}

// TestGenerators: kubectl create's generators build the objects
// client-side and send them (as protobuf for some).
func TestGenerators(t *testing.T) {
	t.Parallel()
	ns := namespace(t, "generators")
	wantOutput(t, "configmap/g created\n", "create", "configmap", "g", "-n", ns, "--from-literal=a=1", "--from-literal=b=2")
	wantOutput(t, `{"a":"1","b":"2"}`, "get", "configmap", "g", "-n", ns, "-o", "jsonpath={.data}")

	wantOutput(t, "deployment.apps/gd created\n", "create", "deployment", "gd", "-n", ns, "--image=skep/echo:v1", "--replicas=2", "--port=8080")
	wantOutput(t, "2 skep/echo:v1 8080", "get", "deployment", "gd", "-n", ns, "-o", "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].image} {.spec.template.spec.containers[0].ports[0].containerPort}")

	wantOutput(t, "service/gs created\n", "create", "service", "clusterip", "gs", "-n", ns, "--tcp=80:8080")
	wantOutput(t, "ClusterIP 80 8080", "get", "service", "gs", "-n", ns, "-o", "jsonpath={.spec.type} {.spec.ports[0].port} {.spec.ports[0].targetPort}")
	wantOutput(t, "service/gn created\n", "create", "service", "nodeport", "gn", "-n", ns, "--tcp=80:8080")
	out := mustKubectl(t, "get", "service", "gn", "-n", ns)
	wantRow(t, "kubectl get service gn", out, "gn NodePort ")

	wantOutput(t, "service/gd exposed\n", "expose", "deployment", "gd", "-n", ns, "--port=80", "--target-port=8080")
	wantOutput(t, `{"app":"gd"}`, "get", "service", "gd", "-n", ns, "-o", "jsonpath={.spec.selector}")

	wantOutput(t, "configmap/dry created (server dry run)\n", "create", "configmap", "dry", "-n", ns, "--from-literal=a=1", "--dry-run=server")
	wantFails(t, []string{`configmaps "dry" not found`}, "get", "configmap", "dry", "-n", ns)
}

// TestSecret: kubectl create secret (Helm keeps its releases in Secrets).
func TestSecret(t *testing.T) {
	t.Parallel()
	ns := namespace(t, "secrets")
	wantOutput(t, "secret/s created\n", "create", "secret", "generic", "s", "-n", ns, "--from-literal=password=hunter2")
	wantOutput(t, "aHVudGVyMg==", "get", "secret", "s", "-n", ns, "-o", "jsonpath={.data.password}")
	out := mustKubectl(t, "get", "secrets", "-n", ns)
	if l := tableLines(out); l[0] != "NAME TYPE DATA AGE" {
		t.Errorf("kubectl get secrets header: %q", l[0])
	}
	wantRow(t, "kubectl get secrets", out, "s Opaque 1 ")
	wantOutput(t, "secret/s\n", "get", "secrets", "-n", ns, "--field-selector", "type=Opaque", "-o", "name")
	out = mustKubectl(t, "describe", "secret", "s", "-n", ns)
	wantContains(t, "kubectl describe secret", out, "password:  7 bytes")
	if strings.Contains(out, "hunter2") {
		t.Errorf("kubectl describe secret shows the secret's value:\n%s", out)
	}
}

// TestDeleteDryRun: delete --dry-run=server says what it would delete and
// the object survives.
func TestDeleteDryRun(t *testing.T) {
	t.Parallel()
	ns := namespace(t, "delete-dry-run")
	wantOutput(t, "configmap/x created\n", "create", "configmap", "x", "-n", ns, "--from-literal=a=1")
	wantOutput(t, `configmap "x" deleted (server dry run)`+"\n", "delete", "configmap", "x", "-n", ns, "--dry-run=server")
	wantOutput(t, "configmap/x\n", "get", "configmap", "x", "-n", ns, "-o", "name")
	wantOutput(t, `configmap "x" deleted (dry run)`+"\n", "delete", "configmap", "x", "-n", ns, "--dry-run=client")
	wantOutput(t, "configmap/x\n", "get", "configmap", "x", "-n", ns, "-o", "name")
	wantOutput(t, `configmap "x" deleted`+"\n", "delete", "configmap", "x", "-n", ns)
	wantFails(t, []string{`Error from server (NotFound): configmaps "x" not found`}, "get", "configmap", "x", "-n", ns)
	wantFails(t, []string{`Error from server (NotFound): configmaps "x" not found`}, "delete", "configmap", "x", "-n", ns)
	wantOutput(t, "", "delete", "configmap", "x", "-n", ns, "--ignore-not-found")
}
