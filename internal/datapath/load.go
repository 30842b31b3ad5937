package datapath

import (
	"fmt"
	"maps"
	"reflect"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/cgwall/cgwall/internal/caps"
	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// WithHooks loads the programs of hooks alone, as HooksFor names them for a
// policy, instead of every program. The verifier takes most of Load's time,
// and a command run under an egress blocklist needs neither the ingress nor
// the sock_create program. Attach refuses the hooks left out.
func WithHooks(hooks ...Hook) Option {
	return func(o *options) { o.hooks = slices.Clone(hooks) }
}

// loadObjects creates every map, then loads progs while fill fills the maps.
// The verifier checks a program in the thread that loads it, so programs load
// side by side, on as many CPUs as Go may use (BenchmarkLoad/loading, a
// one-rule policy on 2 CPUs: 109 ms sequential → 99 ms parallel). Optional
// programs load only withOptional, and their failure is kept in
// d.optionalErr rather than failing the load. On error, everything loaded is
// closed.
func (d *Datapath) loadObjects(progs []program, withOptional bool, fill func() error) error {
	if err := smallTemplates(d.spec).LoadAndAssign(&d.objs, nil); err != nil {
		return loadError(err)
	}
	var err error
	if d.maps, err = newRuleMaps(mapsByName(&d.objs)); err != nil {
		d.objs.Close()
		return err
	}
	objMaps, err := d.programMaps()
	if err != nil {
		d.Close()
		return err
	}
	progs = slices.DeleteFunc(slices.Clone(progs), func(p program) bool { return p.optional && !withOptional })
	specs := make([]*ebpf.ProgramSpec, len(progs))
	for i, p := range progs {
		if specs[i] = d.spec.Programs[p.name]; specs[i] == nil {
			d.objs.Close()
			return fmt.Errorf("load BPF programs: no program %s in the BPF object", p.name)
		}
	}

	// The longest programs go first, so that the CPUs finish together.
	order := make([]int, len(progs))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return len(specs[b].Instructions) - len(specs[a].Instructions) })
	loaded := make([]*ebpf.Program, len(progs))
	errs := make([]error, len(progs)+1) // the last is fill's
	var tasks []func()
	for _, i := range order {
		tasks = append(tasks, func() { loaded[i], errs[i] = loadProgram(specs[i], objMaps) })
	}
	tasks = slices.Insert(tasks, min(1, len(tasks)), func() { errs[len(progs)] = fill() })
	runTasks(tasks)
	return d.keepPrograms(progs, loaded, errs)
}

// keepPrograms keeps the programs that loaded, or closes everything when a
// required one, or the fill, failed.
func (d *Datapath) keepPrograms(progs []program, loaded []*ebpf.Program, errs []error) error {
	for i, p := range progs {
		if loaded[i] != nil {
			d.progs[p.name] = loaded[i]
		} else if p.optional {
			d.optionalErr, errs[i] = errs[i], nil
		}
	}
	if fillErr := errs[len(progs)]; fillErr != nil {
		d.Close()
		return fillErr
	}
	for _, err := range errs {
		if err != nil {
			d.Close()
			return loadError(err)
		}
	}
	return nil
}

// programMaps returns the maps that programs reference, by name: the
// object's maps and its constants (.rodata), which it makes the first time,
// with name_processes set to what this process's privileges allow.
func (d *Datapath) programMaps() (map[string]*ebpf.Map, error) {
	byName := mapsByName(&d.objs)
	if d.rodata == nil {
		var name uint8
		if mayNameProcesses() {
			name = 1
		}
		if err := d.spec.Variables[cgwallVarNameProcesses].Set(name); err != nil {
			return nil, fmt.Errorf("set name_processes: %w", err)
		}
		// A policy without port rules needs no port lookups: without them
		// its programs verify in well under half the time (see
		// port_rules). A persistent one that gets its first port rule
		// has its programs replaced (withPortCode).
		ports := uint8(0)
		if d.portCode() {
			ports = 1
		}
		if err := d.spec.Variables[cgwallVarPortRules].Set(ports); err != nil {
			return nil, fmt.Errorf("set port_rules: %w", err)
		}
		// LoadAndAssign writes the variables into the map and freezes it,
		// so that the verifier prunes the branches the constants rule out.
		var consts struct {
			Rodata *ebpf.Map `ebpf:".rodata"`
		}
		if err := d.spec.LoadAndAssign(&consts, nil); err != nil {
			return nil, fmt.Errorf("create the programs' constants: %w", err)
		}
		d.rodata = consts.Rodata
	}
	byName[".rodata"] = d.rodata
	return byName, nil
}

// mayNameProcesses says whether the programs may name the process behind a
// decision: the helpers that read it take CAP_PERFMON (or CAP_SYS_ADMIN) in
// the socket hooks, which run with only CAP_BPF and CAP_NET_ADMIN refuse.
func mayNameProcesses() bool {
	c, err := caps.Effective()
	return err == nil && (c.Has(unix.CAP_PERFMON) || c.Has(unix.CAP_SYS_ADMIN))
}

// smallTemplates returns spec with one-entry templates for its hash inner
// maps, and for its array inner maps that may differ in size
// (BPF_F_INNER_MAP: the bitmaps, up to 2 MiB). The kernel makes an outer map
// from a template of its inner maps, which LoadAndAssign creates from the
// spec and closes at once; it needs the type, sizes and flags, not the
// capacity, and a hash map allocates its buckets up front. Creating the
// collection's maps, BenchmarkLoad/templates: 2.35 ms full → 1.03 ms small.
func smallTemplates(spec *ebpf.CollectionSpec) *ebpf.CollectionSpec {
	small := *spec
	small.Maps = maps.Clone(spec.Maps)
	for name, m := range small.Maps {
		if m.InnerMap != nil && m.InnerMap != m && (m.InnerMap.Type == ebpf.Hash ||
			m.InnerMap.Type == ebpf.Array && m.InnerMap.Flags&unix.BPF_F_INNER_MAP != 0) {
			m = m.Copy()
			m.InnerMap.MaxEntries = 1
			small.Maps[name] = m
		}
	}
	return &small
}

// runTasks runs tasks, in order, on as many goroutines as Go has CPUs.
func runTasks(tasks []func()) {
	var next atomic.Int32
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), len(tasks)) {
		wg.Go(func() {
			for n := int(next.Add(1)) - 1; n < len(tasks); n = int(next.Add(1)) - 1 {
				tasks[n]()
			}
		})
	}
	wg.Wait()
}

// loadProgram loads one program against maps that exist already, as
// CollectionSpec.LoadAndAssign would with every map given as a replacement.
func loadProgram(spec *ebpf.ProgramSpec, loaded map[string]*ebpf.Map) (*ebpf.Program, error) {
	spec = spec.Copy()
	for i := range spec.Instructions {
		ins := &spec.Instructions[i]
		ref := ins.Reference()
		if !ins.IsLoadFromMap() || ref == "" {
			continue
		}
		m := loaded[ref]
		if m == nil {
			return nil, fmt.Errorf("program %s: no map %s", spec.Name, ref)
		}
		if err := ins.AssociateMap(m); err != nil {
			return nil, fmt.Errorf("program %s: map %s: %w", spec.Name, ref, err)
		}
	}
	p, err := ebpf.NewProgram(spec)
	if err != nil {
		return nil, fmt.Errorf("program %s: %w", spec.Name, err)
	}
	return p, nil
}

// mapsByName reads the maps out of a struct of maps tagged the way
// LoadAndAssign reads them, whatever maps the struct holds.
func mapsByName(s any) map[string]*ebpf.Map {
	v := reflect.ValueOf(s).Elem()
	byName := map[string]*ebpf.Map{}
	for i := range v.NumField() {
		if name := v.Type().Field(i).Tag.Get("ebpf"); name != "" {
			if m, ok := v.Field(i).Interface().(*ebpf.Map); ok {
				byName[name] = m
			}
		}
	}
	return byName
}

// Prepared is a BPF object being parsed ahead of Load, or parsed and waiting
// for it.
type Prepared struct {
	once sync.Once
	ch   chan specOrErr
	spec *ebpf.CollectionSpec
	err  error
	// ballast holds off the garbage collector until the Load that takes the
	// object is done (see Prepare); nil after.
	ballast []byte
}

type specOrErr struct {
	spec *ebpf.CollectionSpec
	err  error
}

// Prepare starts parsing the fixed BPF object (see Fixed) in the background,
// for a Fixed Load given WithPrepared to find ready. Parsing takes milliseconds that a command can
// spend on other work first (its flags, its cgroup). It leaves out line info,
// half of the parsing: a verifier log of the programs loaded from it shows no
// C source lines. A Load without it (tests, attach) keeps them.
//
// It also holds off garbage collection until that Load is done. A process
// starts with a heap goal of 4 MiB, which parsing the object and marshalling
// its programs pass within milliseconds, most of what they allocate still
// live, and the collection that follows competes with the verifier for the
// CPUs: with it, exec took 1.6 ms longer to start its command (medians of
// six runs of go run ./bench -only exec, alternating builds; see
// docs/performance.md). A ballast of never-written memory, which takes
// address space but no RAM (the runtime gets it zeroed from the kernel),
// makes the first collection after the one it sets off wait for 32 MiB; a
// policy big enough to need more collects as usual, in proportion.
func Prepare() *Prepared {
	p := &Prepared{ch: make(chan specOrErr, 1), ballast: make([]byte, prepBallast)}
	go func() {
		spec, err := loadWithoutLineInfo(_CgwallFixedBytes)
		p.ch <- specOrErr{spec, err}
	}()
	return p
}

// prepBallast is the size of Prepared's ballast.
const prepBallast = 16 << 20

// done lets the garbage collector go back to its pace: the Load that took the
// object has ended.
func (p *Prepared) done() {
	if p != nil {
		p.ballast = nil
	}
}

// take returns the fixed object that Prepare parsed, the first time, and a
// fresh parse after that or for a nil Prepared: each Load gets its own copy,
// free to change.
func (p *Prepared) take() (*ebpf.CollectionSpec, error) {
	if p != nil {
		taken := false
		p.once.Do(func() {
			r := <-p.ch
			p.spec, p.err, taken = r.spec, r.err, true
		})
		if taken {
			return p.spec, p.err
		}
	}
	return loadCgwallFixed()
}
