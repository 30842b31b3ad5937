package datapath

import (
	"fmt"
	"maps"
	"reflect"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// WithHooks loads the programs of hooks alone, as HooksFor names them for a
// policy, instead of every program. The verifier takes most of Load's time,
// and a command run under an egress blocklist needs neither the ingress nor
// the sock_create program. Attach refuses the hooks left out.
func WithHooks(hooks ...Hook) Option {
	return func(o *options) { o.hooks = slices.Clone(hooks); o.someHooks = true }
}

// programsByName are the program fields of o, by program name.
func (o *corePrograms) byName() map[string]**ebpf.Program {
	return map[string]**ebpf.Program{
		cgwallProgCgwallEgress: &o.CgwallEgress, cgwallProgCgwallIngress: &o.CgwallIngress,
		cgwallProgCgwallConnect4: &o.CgwallConnect4, cgwallProgCgwallConnect6: &o.CgwallConnect6,
		cgwallProgCgwallSendmsg4: &o.CgwallSendmsg4, cgwallProgCgwallSendmsg6: &o.CgwallSendmsg6,
		cgwallProgCgwallSockCreate: &o.CgwallSockCreate,
	}
}

// hookPrograms names the programs each hook runs.
var hookPrograms = map[Hook][]string{
	HookEgress:     {cgwallProgCgwallEgress},
	HookIngress:    {cgwallProgCgwallIngress},
	HookConnect:    {cgwallProgCgwallConnect4, cgwallProgCgwallConnect6},
	HookSendmsg:    {cgwallProgCgwallSendmsg4, cgwallProgCgwallSendmsg6},
	HookSockCreate: {cgwallProgCgwallSockCreate},
}

// loadObjects creates every map, then loads the programs that o asks for
// while fill fills the maps. The verifier checks a program in the thread that
// loads it, so programs load side by side, on as many CPUs as Go may use
// (BenchmarkLoad/loading, a one-rule policy on 2 CPUs: 109 ms sequential →
// 99 ms parallel). On error, everything loaded is closed.
func (d *Datapath) loadObjects(o options, fill func() error) error {
	if err := smallTemplates(d.spec).LoadAndAssign(&d.objs.cgwallMaps, nil); err != nil {
		return loadError(err)
	}
	objMaps := mapsByName(&d.objs.cgwallMaps)
	slots := d.objs.corePrograms.byName()
	var names []string
	if o.someHooks {
		for _, h := range o.hooks {
			names = append(names, hookPrograms[h]...)
		}
	} else {
		names = slices.Collect(maps.Keys(slots))
	}
	specs := make([]*ebpf.ProgramSpec, len(names))
	for i, name := range names {
		if specs[i] = d.spec.Programs[name]; specs[i] == nil {
			d.objs.Close()
			return fmt.Errorf("load BPF programs: no program %s in the BPF object", name)
		}
	}

	// The longest programs go first, so that the CPUs finish together.
	// Filling the maps takes longer than any program, even for one rule:
	// each Put into an outer map waits for an RCU grace period.
	order := make([]int, len(names))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return len(specs[b].Instructions) - len(specs[a].Instructions) })
	progs := make([]*ebpf.Program, len(names))
	errs := make([]error, len(names)+1) // the last is fill's
	var tasks []func()
	for _, i := range order {
		tasks = append(tasks, func() { progs[i], errs[i] = loadProgram(specs[i], objMaps) })
	}
	tasks = slices.Insert(tasks, min(1, len(tasks)), func() { errs[len(names)] = fill() })
	runTasks(tasks)

	for i, p := range progs {
		*slots[names[i]] = p
	}
	if fillErr := errs[len(names)]; fillErr != nil {
		d.objs.Close()
		return fillErr
	}
	for _, err := range errs {
		if err != nil {
			d.objs.Close()
			return loadError(err)
		}
	}
	return nil
}

// smallTemplates returns spec with one-entry templates for its hash inner
// maps, and for its array inner maps that may differ in size
// (BPF_F_INNER_MAP: the /24 bitmaps, 2 MiB). The kernel makes an outer map
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

// prepared is the BPF object that Prepare parses ahead of Load, while it is
// being parsed or until a Load takes it.
var prepared struct {
	sync.Mutex
	spec chan specOrErr
}

type specOrErr struct {
	spec *ebpf.CollectionSpec
	err  error
}

// Prepare starts parsing the BPF object in the background, for the next Load
// to find ready. Parsing takes milliseconds that a command can spend on other
// work first (its flags, its cgroup). It leaves out line info, half of the
// parsing: a verifier log of the programs loaded from it shows no C source
// lines. A Load without Prepare (tests, attach) keeps them.
func Prepare() {
	ch := make(chan specOrErr, 1)
	prepared.Lock()
	prepared.spec = ch
	prepared.Unlock()
	go func() {
		spec, err := loadWithoutLineInfo()
		ch <- specOrErr{spec, err}
	}()
}

// takeSpec returns the object that Prepare parsed, once, or else parses it.
// Each Load gets its own copy, free to change.
func takeSpec() (*ebpf.CollectionSpec, error) {
	prepared.Lock()
	ch := prepared.spec
	prepared.spec = nil
	prepared.Unlock()
	if ch == nil {
		return loadCgwall()
	}
	r := <-ch
	return r.spec, r.err
}
