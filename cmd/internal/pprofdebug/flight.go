//go:build pprof

package pprofdebug

import (
	"fmt"
	"net/http"
	"os"
	"runtime/trace"
	"time"
)

// flightMaxBytes bounds the flight recorder's window (MaxBytes takes
// precedence over its age).
const flightMaxBytes = 256 << 20

// startFlightRecorder runs a runtime/trace flight recorder keeping at
// least the last MESHROOT_FLIGHT_RECORDER (a duration) of execution, and
// serves its window at /debug/flight, for a bench to save the trace of a
// slow moment after the fact. It does nothing when the variable is unset.
func startFlightRecorder() {
	v := os.Getenv("MESHROOT_FLIGHT_RECORDER")
	if v == "" {
		return
	}
	age, err := time.ParseDuration(v)
	if err != nil || age <= 0 {
		panic("MESHROOT_FLIGHT_RECORDER must be a positive duration (e.g. 15s)")
	}
	fr := trace.NewFlightRecorder(trace.FlightRecorderConfig{MinAge: age, MaxBytes: flightMaxBytes})
	if err := fr.Start(); err != nil {
		panic(fmt.Sprintf("flight recorder: %v", err))
	}
	http.HandleFunc("/debug/flight", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		if _, err := fr.WriteTo(w); err != nil {
			http.Error(w, err.Error(), http.StatusConflict)
		}
	})
}
