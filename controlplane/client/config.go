package client

import (
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"sigs.k8s.io/yaml"
)

// Config is where a client connects and who it is: a server URL, the CA
// that signed the server's certificate, and a bearer token. On disk it is
// a kubeconfig file, so kubectl and other Kubernetes tools can read it.
type Config struct {
	Server string
	CAPEM  []byte
	Token  string
}

type kubeconfig struct {
	APIVersion     string         `json:"apiVersion"`
	Kind           string         `json:"kind"`
	Clusters       []namedCluster `json:"clusters"`
	Users          []namedUser    `json:"users"`
	Contexts       []namedContext `json:"contexts"`
	CurrentContext string         `json:"current-context"`
}
type namedCluster struct {
	Name    string `json:"name"`
	Cluster struct {
		Server                   string `json:"server"`
		CertificateAuthorityData string `json:"certificate-authority-data,omitempty"`
	} `json:"cluster"`
}
type namedUser struct {
	Name string `json:"name"`
	User struct {
		Token string `json:"token,omitempty"`
	} `json:"user"`
}
type namedContext struct {
	Name    string `json:"name"`
	Context struct {
		Cluster string `json:"cluster"`
		User    string `json:"user"`
	} `json:"context"`
}

// WriteConfig writes c as a kubeconfig readable only by its owner.
func WriteConfig(path string, c Config) error {
	kc := kubeconfig{APIVersion: "v1", Kind: "Config", CurrentContext: "skep"}
	var cl namedCluster
	cl.Name = "skep"
	cl.Cluster.Server = c.Server
	cl.Cluster.CertificateAuthorityData = base64.StdEncoding.EncodeToString(c.CAPEM)
	var u namedUser
	u.Name = "skep-admin"
	u.User.Token = c.Token
	var ctx namedContext
	ctx.Name = "skep"
	ctx.Context.Cluster = "skep"
	ctx.Context.User = "skep-admin"
	kc.Clusters, kc.Users, kc.Contexts = []namedCluster{cl}, []namedUser{u}, []namedContext{ctx}
	data, err := yaml.Marshal(kc)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return os.Rename(tmp, path)
}

// LoadConfig reads a kubeconfig's current context.
func LoadConfig(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, err
	}
	var kc kubeconfig
	if err := yaml.Unmarshal(data, &kc); err != nil {
		return Config{}, fmt.Errorf("parse %s: %w", path, err)
	}
	var ctx *namedContext
	for i := range kc.Contexts {
		if kc.Contexts[i].Name == kc.CurrentContext || ctx == nil {
			ctx = &kc.Contexts[i]
		}
	}
	if ctx == nil {
		return Config{}, fmt.Errorf("%s: no context", path)
	}
	var c Config
	for _, cl := range kc.Clusters {
		if cl.Name == ctx.Context.Cluster {
			c.Server = cl.Cluster.Server
			ca, err := base64.StdEncoding.DecodeString(cl.Cluster.CertificateAuthorityData)
			if err != nil {
				return Config{}, fmt.Errorf("%s: clusters[%s].certificate-authority-data: %w", path, cl.Name, err)
			}
			c.CAPEM = ca
		}
	}
	for _, u := range kc.Users {
		if u.Name == ctx.Context.User {
			c.Token = u.User.Token
		}
	}
	if c.Server == "" {
		return Config{}, fmt.Errorf("%s: context %s names no cluster with a server", path, ctx.Name)
	}
	return c, nil
}

// FindConfig picks the client config as the CLI does: the --config flag,
// then $SKEPCONFIG, then ~/.skep/config.
func FindConfig(flag string) (string, error) {
	if flag != "" {
		return flag, nil
	}
	if env := os.Getenv("SKEPCONFIG"); env != "" {
		return env, nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", errors.New("no --config, no $SKEPCONFIG and no home directory to find ~/.skep/config in")
	}
	return filepath.Join(home, ".skep", "config"), nil
}
