package dns

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// errWrongAnswer is an upstream reply to a question other than ours.
var errWrongAnswer = errors.New("reply does not match the question")

// forward asks the upstreams in turn and returns the first reply, or
// SERVFAIL when none answers within the budget. Each upstream gets an equal
// share of what is left, so one that does not answer cannot eat the time of
// the next; one that refuses the connection costs almost nothing.
func (s *Server) forward(req *dns.Msg) *dns.Msg {
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	deadline, _ := ctx.Deadline()

	// A fresh ID upstream: the client's may be predictable, and an attacker
	// who can guess ours could poison the answer we hand to every pod.
	q := req.Copy()
	q.Id = dns.Id()

	var errs []error
	for i, up := range s.upstreams {
		share := time.Until(deadline) / time.Duration(len(s.upstreams)-i)
		if share <= 0 {
			break
		}
		attemptCtx, cancelAttempt := context.WithTimeout(ctx, share)
		resp, err := s.exchange(attemptCtx, q, up)
		cancelAttempt()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		resp.Id = req.Id
		return resp
	}
	s.log.Warn("dns forward failed", "name", req.Question[0].Name,
		"type", dns.TypeToString[req.Question[0].Qtype], "err", errors.Join(errs...))
	resp := new(dns.Msg).SetRcode(req, dns.RcodeServerFailure)
	resp.RecursionAvailable = true
	return s.withEDNS(req, resp)
}

// exchange sends q to one upstream over UDP, and again over TCP when the
// UDP reply was truncated.
func (s *Server) exchange(ctx context.Context, q *dns.Msg, upstream string) (*dns.Msg, error) {
	resp, _, err := s.udpClient.ExchangeContext(ctx, q, upstream)
	if err != nil {
		return nil, fmt.Errorf("query %s over udp: %w", upstream, err)
	}
	if resp.Truncated {
		resp, _, err = s.tcpClient.ExchangeContext(ctx, q, upstream)
		if err != nil {
			return nil, fmt.Errorf("query %s over tcp: %w", upstream, err)
		}
	}
	if !sameQuestion(q, resp) {
		return nil, fmt.Errorf("query %s: %w", upstream, errWrongAnswer)
	}
	return resp, nil
}

func sameQuestion(q, resp *dns.Msg) bool {
	if !resp.Response || len(resp.Question) != 1 {
		return false
	}
	a, b := q.Question[0], resp.Question[0]
	return a.Qtype == b.Qtype && a.Qclass == b.Qclass && strings.EqualFold(a.Name, b.Name)
}
