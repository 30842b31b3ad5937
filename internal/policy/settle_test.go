package policy

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestSortWords(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, tc := range []struct {
		name string
		word func(i int) uint64
	}{
		{"random", func(int) uint64 { return rng.Uint64() }},
		{"keys of a list", func(i int) uint64 { return uint64(rng.Uint32())<<31 | 32<<wordPosBits | uint64(i) }},
		{"few values", func(int) uint64 { return uint64(rng.IntN(3)) << 60 }},
		{"equal", func(int) uint64 { return 42 }},
		{"mostly equal", func(int) uint64 {
			if rng.IntN(10) == 0 {
				return rng.Uint64()
			}
			return 42
		}},
		{"sorted", func(i int) uint64 { return uint64(i) * 7919 }},
	} {
		for _, n := range []int{0, 1, 100, 1 << 12, 100_000} {
			t.Run(fmt.Sprintf("%s, %d words", tc.name, n), func(t *testing.T) {
				words := make([]uint64, n)
				for i := range words {
					words[i] = tc.word(i)
				}
				want := slices.Sorted(slices.Values(words))
				if got := sortWords(words); !slices.Equal(got, want) {
					t.Error("not sorted")
				}
			})
		}
	}
}
