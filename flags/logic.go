package flags

import "time"

// workBudget bounds the work one evaluation may do (loop iterations and
// bytes built), so that no rule can hang a caller.
const workBudget = 1 << 20

// env is the state of one evaluation.
type env struct {
	ctx     map[string]any
	flagKey string
	now     func() time.Time
	budget  int
	failed  string // set when evaluation had to stop; the result is an error
}

// rule is a compiled targeting rule.
type rule struct {
	root func(*env) value
}

type compiler struct {
	evaluators map[string]*node
	ps         *problems
}

func newCompiler(ev map[string]*node, ps *problems) *compiler {
	return &compiler{evaluators: ev, ps: ps}
}

func (c *compiler) checkEvaluator(name string) {}

func (c *compiler) compileRule(n *node, path string) *rule {
	return &rule{root: func(e *env) value {
		e.failed = "targeting is not supported yet"
		return vNull
	}}
}
