package pluginhost

import "net"

// silentListener accepts TCP connections on 127.0.0.1 and never answers.
type silentListener struct {
	net.Listener
	conns []net.Conn
}

func newSilentListener() (*silentListener, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &silentListener{Listener: l}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s.conns = append(s.conns, c)
		}
	}()
	return s, nil
}
