package apiserver

import "time"

// AllowLoopbackNodeAddresses lets nodes declare loopback addresses, for
// tests whose stand-in agents listen on loopback.
func AllowLoopbackNodeAddresses(s *Server) { s.auth.allowLoopback = true }

// SetClock makes the server read the time from now: credentials expire
// and rate limits refill by it.
func SetClock(s *Server, now func() time.Time) {
	s.auth.now = now
	s.joins.now = now
}
