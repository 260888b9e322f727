// Package flags is Flagpole's flag engine: the flag-set model in flagd's flag
// definition format, its validation, the JsonLogic compiler and the evaluator
// that resolves a flag for an evaluation context with OpenFeature semantics.
//
// A flag set is parsed into a [Document] (JSON or YAML), compiled once into an
// immutable [Set], and evaluated many times concurrently without allocation on
// the common paths. The package also declares the [Store] contract that storage
// backends implement and the [Service] that performs validated, audited writes.
//
// The package does no I/O of its own and imports only the standard library and
// small hashing/YAML libraries.
package flags
