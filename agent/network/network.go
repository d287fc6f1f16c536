package network

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// DefaultBridgeName is the bridge New makes when Config.BridgeName is empty.
const DefaultBridgeName = "skep0"

// podInterface is the name of the pod's end of its veth pair.
const podInterface = "eth0"

// errClosed is returned by the methods of a Network after Close.
var errClosed = errors.New("pod network is closed")

// Config describes one node's pod network.
type Config struct {
	NodeName    string
	PodCIDR     netip.Prefix // this node's pods, e.g. 10.244.1.0/24; the bridge takes its first address
	ClusterCIDR netip.Prefix // every pod of the cluster, e.g. 10.244.0.0/16; pod traffic leaving it is masqueraded
	BridgeName  string       // default DefaultBridgeName
	DataDir     string       // address records live under <DataDir>/ipam
	Logger      *slog.Logger
}

// Network is a node's pod network. Its methods may be called from any
// goroutine; they are serialised.
type Network struct {
	cfg     Config
	log     *slog.Logger
	gateway netip.Addr     // the bridge's address, every pod's default route
	nodeNS  netns.NsHandle // the namespace New ran in
	nl      *netlink.Handle
	ipam    *ipam

	mu sync.Mutex
}

// New ensures the node side of the pod network in the network namespace of
// the calling thread: the bridge with the first address of cfg.PodCIDR, up;
// net.ipv4.ip_forward on; net.bridge.bridge-nf-call-iptables on where
// br_netfilter is present; masquerade of pod traffic leaving cfg.ClusterCIDR.
// Everything it does is idempotent, so an agent calls it on every start.
// Close releases the Network's handles; Cleanup removes what it made.
func New(ctx context.Context, cfg Config) (*Network, error) {
	if err := validate(&cfg); err != nil {
		return nil, err
	}
	n := &Network{
		cfg:     cfg,
		log:     cfg.Logger.With("node", cfg.NodeName),
		gateway: cfg.PodCIDR.Addr().Next(),
	}
	var err error
	// Lock so that the namespace read is the calling thread's, not that of
	// whichever thread the goroutine happens to be moved to.
	runtime.LockOSThread()
	n.nodeNS, err = netns.Get()
	runtime.UnlockOSThread()
	if err != nil {
		return nil, fmt.Errorf("get node network namespace: %w", err)
	}
	if n.nl, err = netlink.NewHandleAt(n.nodeNS); err != nil {
		n.nodeNS.Close()
		return nil, fmt.Errorf("open netlink handle: %w", err)
	}
	if err := n.ensureNode(ctx); err != nil {
		n.Close()
		return nil, err
	}
	if n.ipam, err = newIPAM(n.ipamDir(), cfg.PodCIDR); err != nil {
		n.Close()
		return nil, err
	}
	n.log.Info("pod network ready", "bridge", cfg.BridgeName, "gateway", n.gateway, "podCIDR", cfg.PodCIDR)
	return n, nil
}

// validate checks cfg and fills in defaults.
func validate(cfg *Config) error {
	if cfg.NodeName == "" {
		return errors.New("network config: NodeName is empty")
	}
	if !cfg.PodCIDR.IsValid() || !cfg.PodCIDR.Addr().Is4() || cfg.PodCIDR.Bits() > 30 {
		return fmt.Errorf("network config: PodCIDR %s: want an IPv4 prefix of /30 or larger", cfg.PodCIDR)
	}
	if cfg.PodCIDR != cfg.PodCIDR.Masked() {
		return fmt.Errorf("network config: PodCIDR %s has host bits set (want %s)", cfg.PodCIDR, cfg.PodCIDR.Masked())
	}
	if !cfg.ClusterCIDR.IsValid() || !cfg.ClusterCIDR.Addr().Is4() {
		return fmt.Errorf("network config: ClusterCIDR %s: want an IPv4 prefix", cfg.ClusterCIDR)
	}
	cfg.ClusterCIDR = cfg.ClusterCIDR.Masked()
	if cfg.ClusterCIDR.Bits() > cfg.PodCIDR.Bits() || !cfg.ClusterCIDR.Contains(cfg.PodCIDR.Addr()) {
		return fmt.Errorf("network config: PodCIDR %s is not inside ClusterCIDR %s", cfg.PodCIDR, cfg.ClusterCIDR)
	}
	if cfg.BridgeName == "" {
		cfg.BridgeName = DefaultBridgeName
	}
	if len(cfg.BridgeName) > unix.IFNAMSIZ-1 {
		return fmt.Errorf("network config: BridgeName %q: longer than %d characters", cfg.BridgeName, unix.IFNAMSIZ-1)
	}
	if cfg.DataDir == "" {
		return errors.New("network config: DataDir is empty")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

func (n *Network) ipamDir() string {
	return filepath.Join(n.cfg.DataDir, "ipam", strings.ReplaceAll(n.cfg.PodCIDR.String(), "/", "_"))
}

// ensureNode makes the bridge, the sysctls and the iptables chains.
func (n *Network) ensureNode(ctx context.Context) error {
	if _, err := n.ensureBridge(); err != nil {
		return err
	}
	return inNetNS(n.nodeNS, func() error {
		if err := writeSysctl("net/ipv4/ip_forward", "1"); err != nil {
			return fmt.Errorf("enable ip forwarding: %w", err)
		}
		const bridgeNF = "net/bridge/bridge-nf-call-iptables"
		switch ok, err := sysctlExists(bridgeNF); {
		case err != nil:
			return fmt.Errorf("look for %s: %w", bridgeNF, err)
		case ok:
			if err := writeSysctl(bridgeNF, "1"); err != nil {
				return fmt.Errorf("send bridged traffic through iptables: %w", err)
			}
		default:
			n.log.Warn("br_netfilter is not loaded: traffic between pods of this node bypasses iptables, which the iptables dataplane needs (modprobe br_netfilter)")
		}
		if err := ensureIptables(ctx, n.cfg.PodCIDR, n.cfg.ClusterCIDR); err != nil {
			return fmt.Errorf("ensure masquerade: %w", err)
		}
		return nil
	})
}

// ensureBridge makes the bridge if missing, gives it exactly the gateway
// address and brings it up.
func (n *Network) ensureBridge() (netlink.Link, error) {
	name := n.cfg.BridgeName
	link, err := n.nl.LinkByName(name)
	if isNotFound(err) {
		err = n.nl.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}})
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("create bridge %s: %w", name, err)
		}
		link, err = n.nl.LinkByName(name)
	}
	if err != nil {
		return nil, fmt.Errorf("find bridge %s: %w", name, err)
	}
	if _, ok := link.(*netlink.Bridge); !ok {
		return nil, fmt.Errorf("link %s is a %s, not a bridge", name, link.Type())
	}
	want := prefixAddr(n.gateway, n.cfg.PodCIDR.Bits())
	addrs, err := n.nl.AddrList(link, unix.AF_INET)
	if err != nil {
		return nil, fmt.Errorf("list addresses of bridge %s: %w", name, err)
	}
	for _, a := range addrs {
		// An address from an earlier pod CIDR would route pods that are no
		// longer here.
		if a.IPNet.String() != want.IPNet.String() {
			if err := n.nl.AddrDel(link, &a); err != nil {
				return nil, fmt.Errorf("remove stale address %s from bridge %s: %w", a.IPNet, name, err)
			}
		}
	}
	if err := n.nl.AddrReplace(link, want); err != nil {
		return nil, fmt.Errorf("add address %s to bridge %s: %w", want.IPNet, name, err)
	}
	if err := n.nl.LinkSetUp(link); err != nil {
		return nil, fmt.Errorf("bring up bridge %s: %w", name, err)
	}
	return link, nil
}

// HostVethName returns the name of the host end of podID's veth pair:
// "veth" and 8 hex digits of a SHA-256 of the pod ID, 12 characters, within
// the kernel's 15. It is derived, not stored, so Teardown finds the link
// without the pod's namespace.
func HostVethName(podID string) string {
	sum := sha256.Sum256([]byte(podID))
	return "veth" + hex.EncodeToString(sum[:4])
}

// Setup connects the pod whose network namespace is at netnsPath: a veth pair
// whose host end is a port of the bridge (hairpin on) and whose pod end is
// eth0 with an address from the pod CIDR, lo up, and a default route via the
// bridge. It returns the pod's address. The same podID gets the same address
// back, also from a new Network on the same DataDir; calling Setup again for
// a pod already set up only re-ensures it.
func (n *Network) Setup(ctx context.Context, podID string, netnsPath string) (netip.Addr, error) {
	if podID == "" {
		return netip.Addr{}, errors.New("set up pod network: empty pod ID")
	}
	if err := ctx.Err(); err != nil {
		return netip.Addr{}, fmt.Errorf("set up network of pod %s: %w", podID, err)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.nl == nil {
		return netip.Addr{}, errClosed
	}

	addr, fresh, err := n.ipam.allocate(podID)
	if err != nil {
		return netip.Addr{}, err
	}
	if err := n.setup(podID, netnsPath, addr); err != nil {
		if fresh {
			if rerr := n.ipam.release(podID); rerr != nil {
				err = errors.Join(err, rerr)
			}
		}
		return netip.Addr{}, fmt.Errorf("set up network of pod %s: %w", podID, err)
	}
	n.log.Info("pod network set up", "pod", podID, "addr", addr, "veth", HostVethName(podID))
	return addr, nil
}

func (n *Network) setup(podID, netnsPath string, addr netip.Addr) error {
	bridge, err := n.ensureBridge()
	if err != nil {
		return err
	}
	podNS, err := netns.GetFromPath(netnsPath)
	if err != nil {
		return fmt.Errorf("open network namespace %s: %w", netnsPath, err)
	}
	defer podNS.Close()
	podNL, err := netlink.NewHandleAt(podNS)
	if err != nil {
		return fmt.Errorf("open netlink handle in %s: %w", netnsPath, err)
	}
	defer podNL.Close()

	hostName := HostVethName(podID)
	host, err := n.existingPair(podNL, hostName)
	if err != nil {
		return err
	}
	if host == nil {
		if host, err = n.createPair(podNS, podNL, hostName, bridge.Attrs().MTU); err != nil {
			return err
		}
	}
	if err := n.nl.LinkSetMaster(host, bridge); err != nil {
		return fmt.Errorf("attach %s to bridge %s: %w", hostName, n.cfg.BridgeName, err)
	}
	if err := n.nl.LinkSetHairpin(host, true); err != nil {
		return fmt.Errorf("set hairpin on %s: %w", hostName, err)
	}
	if err := n.nl.LinkSetUp(host); err != nil {
		return fmt.Errorf("bring up %s: %w", hostName, err)
	}
	return n.configurePod(podNL, addr)
}

// existingPair returns the host end of podID's veth pair when it exists and
// its peer is eth0 in the pod's namespace. A host end whose peer is elsewhere
// (the pod got a new namespace) or a pod eth0 that is not its peer is
// removed, and nil returned, so the caller makes a fresh pair.
func (n *Network) existingPair(podNL *netlink.Handle, hostName string) (netlink.Link, error) {
	host, err := n.nl.LinkByName(hostName)
	if err != nil && !isNotFound(err) {
		return nil, fmt.Errorf("find %s: %w", hostName, err)
	}
	pod, perr := podNL.LinkByName(podInterface)
	if perr != nil && !isNotFound(perr) {
		return nil, fmt.Errorf("find %s in pod: %w", podInterface, perr)
	}
	if host != nil && pod != nil && host.Type() == "veth" && pod.Type() == "veth" &&
		host.Attrs().ParentIndex == pod.Attrs().Index && pod.Attrs().ParentIndex == host.Attrs().Index {
		return host, nil
	}
	if host != nil {
		if err := n.nl.LinkDel(host); err != nil && !isNotFound(err) {
			return nil, fmt.Errorf("remove stale %s: %w", hostName, err)
		}
	}
	if pod != nil {
		if err := podNL.LinkDel(pod); err != nil && !isNotFound(err) {
			return nil, fmt.Errorf("remove stale %s in pod: %w", podInterface, err)
		}
	}
	return nil, nil
}

// createPair makes the veth pair with its pod end created straight in the
// pod's namespace as eth0, so no temporary name ever appears on the node.
func (n *Network) createPair(podNS netns.NsHandle, podNL *netlink.Handle, hostName string, mtu int) (netlink.Link, error) {
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: hostName, MTU: mtu},
		PeerName:      podInterface,
		PeerNamespace: netlink.NsFd(int(podNS)),
	}
	if err := n.nl.LinkAdd(veth); err != nil {
		return nil, fmt.Errorf("create veth pair %s/%s: %w", hostName, podInterface, err)
	}
	host, err := n.nl.LinkByName(hostName)
	if err != nil {
		return nil, fmt.Errorf("find new %s: %w", hostName, err)
	}
	return host, nil
}

// configurePod brings up lo and eth0 in the pod, gives eth0 the pod's
// address and routes everything via the bridge.
func (n *Network) configurePod(podNL *netlink.Handle, addr netip.Addr) error {
	lo, err := podNL.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo in pod: %w", err)
	}
	if err := podNL.LinkSetUp(lo); err != nil {
		return fmt.Errorf("bring up lo in pod: %w", err)
	}
	eth, err := podNL.LinkByName(podInterface)
	if err != nil {
		return fmt.Errorf("find %s in pod: %w", podInterface, err)
	}
	if err := podNL.AddrReplace(eth, prefixAddr(addr, n.cfg.PodCIDR.Bits())); err != nil {
		return fmt.Errorf("add address %s to %s in pod: %w", addr, podInterface, err)
	}
	if err := podNL.LinkSetUp(eth); err != nil {
		return fmt.Errorf("bring up %s in pod: %w", podInterface, err)
	}
	def := &netlink.Route{
		LinkIndex: eth.Attrs().Index,
		Dst:       &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)},
		Gw:        net.IP(n.gateway.AsSlice()),
	}
	if err := podNL.RouteReplace(def); err != nil {
		return fmt.Errorf("add default route via %s in pod: %w", n.gateway, err)
	}
	return nil
}

// Teardown removes podID's veth pair and releases its address. The pod's
// namespace may already be gone (and the pair with it). Tearing down a pod
// that has nothing is not an error.
func (n *Network) Teardown(ctx context.Context, podID string) error {
	if podID == "" {
		return errors.New("tear down pod network: empty pod ID")
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("tear down network of pod %s: %w", podID, err)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.nl == nil {
		return errClosed
	}
	if err := n.deleteLink(HostVethName(podID)); err != nil {
		return fmt.Errorf("tear down network of pod %s: %w", podID, err)
	}
	if err := n.ipam.release(podID); err != nil {
		return fmt.Errorf("tear down network of pod %s: %w", podID, err)
	}
	n.log.Info("pod network torn down", "pod", podID)
	return nil
}

// deleteLink removes a link of the node by name; a missing link is fine.
func (n *Network) deleteLink(name string) error {
	link, err := n.nl.LinkByName(name)
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("find %s: %w", name, err)
	}
	// The link can vanish between the lookup and the delete when its peer's
	// namespace is being destroyed.
	if err := n.nl.LinkDel(link); err != nil && !isNotFound(err) {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	return nil
}

// Cleanup removes everything the pod network made on the node: the pods'
// veths, the bridge, the routes to other nodes, the iptables chains and the
// address records. It carries on past errors and returns them all.
func (n *Network) Cleanup(ctx context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.nl == nil {
		return errClosed
	}
	var errs []error
	if recs, err := n.ipam.records(); err != nil {
		errs = append(errs, err)
	} else {
		for podID := range recs {
			if err := n.deleteLink(HostVethName(podID)); err != nil {
				errs = append(errs, fmt.Errorf("remove veth of pod %s: %w", podID, err))
			}
		}
	}
	if err := n.syncRoutes(nil); err != nil {
		errs = append(errs, err)
	}
	if err := n.deleteLink(n.cfg.BridgeName); err != nil {
		errs = append(errs, fmt.Errorf("remove bridge: %w", err))
	}
	if err := inNetNS(n.nodeNS, func() error { return removeIptables(ctx) }); err != nil {
		errs = append(errs, fmt.Errorf("remove iptables chains: %w", err))
	}
	if err := os.RemoveAll(filepath.Join(n.cfg.DataDir, "ipam")); err != nil {
		errs = append(errs, fmt.Errorf("remove ipam state: %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("clean up pod network: %w", err)
	}
	n.log.Info("pod network removed")
	return nil
}

// Close releases the Network's netlink handle and namespace handle. It
// changes nothing on the node.
func (n *Network) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.nl != nil {
		n.nl.Close()
		n.nl = nil
	}
	if n.nodeNS.IsOpen() {
		if err := n.nodeNS.Close(); err != nil {
			return fmt.Errorf("close node network namespace: %w", err)
		}
	}
	return nil
}

// prefixAddr is addr with a prefix length, in netlink's form.
func prefixAddr(addr netip.Addr, bits int) *netlink.Addr {
	return &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(addr.AsSlice()), Mask: net.CIDRMask(bits, 32)}}
}

// isNotFound reports whether err says a link does not exist.
func isNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, unix.ENODEV)
}
