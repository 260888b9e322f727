package flags

import "sync"

// scratch holds the working buffers of one Load or Recompile, which are
// dropped when it returns. They are pooled so that a stream of changes
// (an SDK's, a server's) does not allocate them, and the garbage collector
// does not scan them, again for every change.
type scratch struct {
	flagNodes []flagSource
	order     []int
	stack     []*node
	kstk      []string
	spans     []flagSpan
	flagKeys  []string
	flagVals  []*node
}

var scratchPool = sync.Pool{New: func() any { return new(scratch) }}

func getScratch() *scratch { return scratchPool.Get().(*scratch) }

// release returns sc to the pool without references into the last build.
func (sc *scratch) release() {
	clear(sc.flagNodes[:cap(sc.flagNodes)])
	clear(sc.stack[:cap(sc.stack)])
	clear(sc.kstk[:cap(sc.kstk)])
	clear(sc.flagKeys[:cap(sc.flagKeys)])
	clear(sc.flagVals[:cap(sc.flagVals)])
	sc.flagNodes, sc.order, sc.stack, sc.kstk, sc.spans = sc.flagNodes[:0], sc.order[:0], sc.stack[:0], sc.kstk[:0], sc.spans[:0]
	sc.flagKeys, sc.flagVals = sc.flagKeys[:0], sc.flagVals[:0]
	scratchPool.Put(sc)
}
