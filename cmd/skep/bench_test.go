package main

import (
	"slices"
	"testing"
)

func TestParseSizes(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    []int
		wantErr bool
	}{
		{in: "1000,10000,30000", want: []int{1000, 10000, 30000}},
		{in: " 1_000 , 10000,", want: []int{1000, 10000}},
		{in: "100,0", wantErr: true},
		{in: "ten", wantErr: true},
		{in: ",", wantErr: true},
	} {
		got, err := parseSizes("sizes", tc.in)
		if (err != nil) != tc.wantErr || !slices.Equal(got, tc.want) {
			t.Errorf("parseSizes(%q) = %v, %v; want %v, error %v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}
