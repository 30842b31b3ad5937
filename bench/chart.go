package main

import (
	"bytes"
	"fmt"
	"image/color"
	"math"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// The chart (pps.png, docs/img/bench-pps.png): packets per second relative
// to no filter, the best run against the best run (see index.best), against
// the rule count on a log scale; one panel per traffic pattern, one line per
// variant.

var seriesColor = map[string]color.Color{
	vCgwall:    color.RGBA{0x1f, 0x77, 0xb4, 0xff},
	vNft:       color.RGBA{0xff, 0x7f, 0x0e, 0xff},
	vIpt:       color.RGBA{0xd6, 0x27, 0x28, 0xff},
	vIptLegacy: color.RGBA{0x94, 0x67, 0xbd, 0xff},
}

// chart draws the panels side by side, the legend in the first.
func (ix *index) chart() ([]byte, error) {
	const panelW, h = 600, 560 // pixels
	row := make([]*plot.Plot, len(ix.Patterns))
	for i, dsts := range ix.Patterns {
		var err error
		if row[i], err = ix.panel(dsts, i == 0); err != nil {
			return nil, err
		}
	}
	px := func(n int) vg.Length { return vg.Length(n) * vg.Inch / 96 }
	img := vgimg.NewWith(vgimg.UseWH(px(panelW*len(row)), px(h)), vgimg.UseDPI(96))
	tiles := draw.Tiles{Rows: 1, Cols: len(row), PadX: px(30), PadTop: px(10), PadBottom: px(10), PadLeft: px(10), PadRight: px(20)}
	canvases := plot.Align([][]*plot.Plot{row}, tiles, draw.New(img))
	for i, p := range row {
		p.Draw(canvases[0][i])
	}
	var buf bytes.Buffer
	_, err := vgimg.PngCanvas{Canvas: img}.WriteTo(&buf)
	return buf.Bytes(), err
}

// panel is one traffic pattern's plot, with the legend if asked.
func (ix *index) panel(dsts int, legend bool) (*plot.Plot, error) {
	pl := plot.New()
	pl.Title.Text = "UDP packets/s vs no filter\n" + patternName(dsts)
	pl.X.Label.Text = "rules (log scale)"
	pl.Y.Label.Text = fmt.Sprintf("%% of no filter (best of %d rounds against no filter's best)", ix.R.Rounds)
	pl.X.Scale = plot.LogScale{}
	pl.X.Min, pl.X.Max, pl.Y.Min, pl.Y.Max = 1, 1e6, 0, 110
	var xt, yt plot.ConstantTicks
	for n := 1; n <= 1_000_000; n *= 10 {
		xt = append(xt, plot.Tick{Value: float64(n), Label: human(n)})
	}
	for pct := 0; pct <= 200; pct += 10 {
		yt = append(yt, plot.Tick{Value: float64(pct), Label: fmt.Sprintf("%d%%", pct)})
	}
	pl.X.Tick.Marker, pl.Y.Tick.Marker = xt, yt
	pl.Add(plotter.NewGrid())

	ref := level(100, color.Gray{0x80}, 2, nil)
	goalLine := level(100*goal.ppsShare, color.Black, 1, []vg.Length{vg.Points(4), vg.Points(4)})
	pl.Add(ref, goalLine)
	key := func(name string, thumbs ...plot.Thumbnailer) {
		if legend {
			pl.Legend.Add(name, thumbs...)
		}
	}
	key(vNone, ref)
	for _, v := range e2eVariants {
		var xys plotter.XYs
		for _, n := range ix.Sizes {
			if br := ix.best("", v, n, dsts); !math.IsNaN(br) {
				xys = append(xys, plotter.XY{X: float64(n), Y: 100 * br})
			}
		}
		if len(xys) == 0 {
			continue
		}
		l, s, err := plotter.NewLinePoints(xys)
		if err != nil {
			return nil, fmt.Errorf("chart of %s: %w", v, err)
		}
		l.Color, l.Width = seriesColor[v], vg.Points(2)
		s.Color, s.Shape, s.Radius = seriesColor[v], draw.BoxGlyph{}, vg.Points(3)
		pl.Add(l, s)
		key(v, l, s)
	}
	key(fmt.Sprintf("%.0f%% goal", 100*goal.ppsShare), goalLine)
	pl.Legend.Left, pl.Legend.XOffs, pl.Legend.YOffs = true, vg.Points(8), vg.Points(8)
	return pl, nil
}

// level is a horizontal line across the panel at y percent.
func level(y float64, c color.Color, width float64, dashes []vg.Length) *plotter.Line {
	l := &plotter.Line{XYs: plotter.XYs{{X: 1, Y: y}, {X: 1e6, Y: y}}}
	l.LineStyle = draw.LineStyle{Color: c, Width: vg.Points(width), Dashes: dashes}
	return l
}
