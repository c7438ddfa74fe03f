package ca_test

import (
	"reflect"
	"testing"

	"github.com/meshroot/meshroot/ca"
)

// checkAdminComplete fails when an Admin leaves a concern unset: a verb of
// that concern would panic on a nil interface.
func checkAdminComplete(t *testing.T, what string, a ca.Admin) {
	t.Helper()
	v := reflect.ValueOf(a)
	for i := range v.NumField() {
		if v.Field(i).IsNil() {
			t.Errorf("%s leaves %s unset", what, v.Type().Field(i).Name)
		}
	}
}

func TestServiceAdminComplete(t *testing.T) {
	checkAdminComplete(t, "Service.Admin", (&ca.Service{}).Admin())
}
