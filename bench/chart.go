package main

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"strings"
)

// A small line chart drawn with the standard library: packets per second
// relative to no filter against the rule count (log scale), one line per
// variant.

type canvas struct{ img *image.RGBA }

func newCanvas(w, h int) *canvas {
	c := &canvas{image.NewRGBA(image.Rect(0, 0, w, h))}
	for i := range c.img.Pix {
		c.img.Pix[i] = 0xff
	}
	return c
}

func (c *canvas) set(x, y int, col color.RGBA) {
	if image.Pt(x, y).In(c.img.Rect) {
		c.img.SetRGBA(x, y, col)
	}
}

func (c *canvas) rect(x0, y0, x1, y1 int, col color.RGBA) {
	for y := y0; y <= y1; y++ {
		for x := x0; x <= x1; x++ {
			c.set(x, y, col)
		}
	}
}

// line draws from (x0,y0) to (x1,y1), width w; dash > 0 draws dash pixels on,
// dash off.
func (c *canvas) line(x0, y0, x1, y1 float64, w int, dash int, col color.RGBA) {
	n := int(math.Max(math.Abs(x1-x0), math.Abs(y1-y0))) + 1
	for i := 0; i <= n; i++ {
		if dash > 0 && (i/dash)%2 == 1 {
			continue
		}
		t := float64(i) / float64(n)
		x := int(math.Round(x0 + t*(x1-x0)))
		y := int(math.Round(y0 + t*(y1-y0)))
		c.rect(x-w/2, y-w/2, x+(w-1)/2, y+(w-1)/2, col)
	}
}

// text draws s with its top left at (x, y), each font dot scale pixels.
func (c *canvas) text(x, y int, s string, scale int, col color.RGBA) {
	for _, r := range s {
		if r < 0x20 || r > 0x7e {
			r = '?'
		}
		g := font5x7[r-0x20]
		dy := 0
		if strings.ContainsRune("gjpqy", r) {
			dy = scale // these letters hang below the line
		}
		for cx := 0; cx < 5; cx++ {
			for cy := 0; cy < 7; cy++ {
				if g[cx]&(1<<cy) != 0 {
					c.rect(x+cx*scale, y+dy+cy*scale, x+cx*scale+scale-1, y+dy+cy*scale+scale-1, col)
				}
			}
		}
		x += 6 * scale
	}
}

// vtext draws s rotated a quarter turn anticlockwise, its baseline at x,
// ending at y.
func (c *canvas) vtext(x, y int, s string, scale int, col color.RGBA) {
	for _, r := range s {
		if r < 0x20 || r > 0x7e {
			r = '?'
		}
		g := font5x7[r-0x20]
		dx := 0
		if strings.ContainsRune("gjpqy", r) {
			dx = scale
		}
		for cx := 0; cx < 5; cx++ {
			for cy := 0; cy < 7; cy++ {
				if g[cx]&(1<<cy) != 0 {
					px, py := x+dx+cy*scale, y-cx*scale
					c.rect(px, py-scale+1, px+scale-1, py, col)
				}
			}
		}
		y -= 6 * scale
	}
}

func textWidth(s string, scale int) int { return len(s) * 6 * scale }

var (
	black     = color.RGBA{0x20, 0x20, 0x20, 0xff}
	grey      = color.RGBA{0x80, 0x80, 0x80, 0xff}
	lightGrey = color.RGBA{0xe4, 0xe4, 0xe4, 0xff}
	seriesCol = map[string]color.RGBA{
		vCgwall:    {0x1f, 0x77, 0xb4, 0xff},
		vNft:       {0xff, 0x7f, 0x0e, 0xff},
		vIpt:       {0xd6, 0x27, 0x28, 0xff},
		vIptLegacy: {0x94, 0x67, 0xbd, 0xff},
	}
)

// chart draws one panel per traffic pattern and a legend.
func (r *results) chart() ([]byte, error) {
	const (
		panelW, h = 560, 560
		legendW   = 270
	)
	pats := r.patterns()
	w := panelW*len(pats) + legendW
	c := newCanvas(w, h)
	for i, dsts := range pats {
		r.panel(c, i*panelW, panelW, h, dsts)
	}

	x := panelW * len(pats)
	legendY := 90
	for _, v := range append([]string{vNone}, e2eVariants...) {
		col, ok := seriesCol[v]
		if !ok {
			col = grey
		}
		c.line(float64(x+10), float64(legendY+7), float64(x+40), float64(legendY+7), 3, 0, col)
		c.text(x+48, legendY, v, 2, black)
		legendY += 28
	}
	c.line(float64(x+10), float64(legendY+7), float64(x+40), float64(legendY+7), 1, 6, black)
	c.text(x+48, legendY, "97% goal", 2, black)
	legendY += 40
	for _, line := range []string{
		fmt.Sprintf("best of %d rounds against", r.Rounds),
		"the best run of no filter",
	} {
		c.text(x+10, legendY, line, 1, grey)
		legendY += 12
	}

	var buf bytes.Buffer
	if err := png.Encode(&buf, c.img); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func (r *results) panel(c *canvas, x0, w, h, dsts int) {
	const (
		left, right, top, bottom = 90, 20, 70, 80
		maxExp                   = 6.0
		yMax                     = 110.0
	)
	pw, ph := float64(w-left-right), float64(h-top-bottom)
	xOf := func(n int) float64 { return float64(x0+left) + math.Log10(math.Max(float64(n), 1))/maxExp*pw }
	yOf := func(pct float64) float64 { return float64(top) + (1-math.Min(math.Max(pct, 0), yMax)/yMax)*ph }

	title := "UDP packets/s vs no filter"
	c.text(x0+left+int(pw)/2-textWidth(title, 2)/2, 14, title, 2, black)
	sub := patternName(dsts)
	c.text(x0+left+int(pw)/2-textWidth(sub, 2)/2, 38, sub, 2, grey)
	for pct := 0.0; pct <= 100; pct += 10 {
		y := yOf(pct)
		c.line(float64(x0+left), y, float64(x0+w-right), y, 1, 0, lightGrey)
		lbl := fmt.Sprintf("%.0f%%", pct)
		c.text(x0+left-10-textWidth(lbl, 2), int(y)-7, lbl, 2, black)
	}
	for e := 0; e <= int(maxExp); e++ {
		n := int(math.Pow(10, float64(e)))
		x := xOf(n)
		c.line(x, float64(top), x, float64(h-bottom), 1, 0, lightGrey)
		lbl := human(n)
		c.text(int(x)-textWidth(lbl, 2)/2, h-bottom+10, lbl, 2, black)
	}
	c.line(float64(x0+left), float64(top), float64(x0+left), float64(h-bottom), 2, 0, black)
	c.line(float64(x0+left), float64(h-bottom), float64(x0+w-right), float64(h-bottom), 2, 0, black)
	xl := "rules (log scale)"
	c.text(x0+left+int(pw)/2-textWidth(xl, 2)/2, h-bottom+38, xl, 2, black)
	yl := "% of no filter"
	c.vtext(x0+14, top+int(ph)/2+textWidth(yl, 2)/2, yl, 2, black)

	// No filter is 100% by definition; the goal is 97%.
	c.line(float64(x0+left), yOf(100), float64(x0+w-right), yOf(100), 2, 0, grey)
	c.line(float64(x0+left), yOf(97), float64(x0+w-right), yOf(97), 1, 6, black)

	for _, v := range e2eVariants {
		col := seriesCol[v]
		var pts [][2]float64
		for _, n := range r.e2eSizes() {
			// The best run against the best run of no filter: on this noisy
			// host it is steadier than the per-round ratio (see bestRatio).
			if br := r.bestRatio(v, n, dsts); !math.IsNaN(br) {
				pts = append(pts, [2]float64{xOf(n), yOf(100 * br)})
			}
		}
		for i := 1; i < len(pts); i++ {
			c.line(pts[i-1][0], pts[i-1][1], pts[i][0], pts[i][1], 3, 0, col)
		}
		for _, p := range pts {
			c.rect(int(p[0])-4, int(p[1])-4, int(p[0])+4, int(p[1])+4, col)
		}
	}
}
