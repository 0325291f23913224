package repo

// Optional interfaces through decorators.
//
// A Backend may implement optional interfaces for what not every storage
// can do: Spooler, StreamSaver, TempRemover and PrefixLister on the Backend, PlacedReader
// on the reader Load hands to its function. Decorators (limit, retry,
// faulty, SpoolToFiles) sit above backends, and each used to hide them:
// a rate limit around a local directory turned off its spooling and its
// temp-file cleanup. Passing them down untouched would be as wrong, since
// a spooled pack would then bypass the rate limit and the retries.
//
// The rule, the same for every decorator:
//   - A decorator implements Wrapper, and for each optional interface it
//     supports, a method that does its job (paces, retries, records) and
//     calls down to the Backend beneath through As.
//   - Callers find an optional interface with As, never by a type
//     assertion. As finds one on a Wrapper only if the wrapper implements it
//     and the Backend beneath has it, so a wrapper never claims what the
//     storage cannot do, and a wrapper that does not know an interface
//     hides it instead of letting calls slip past it.
//   - A reader a decorator hands to Load's function implements PlacedReader
//     exactly when the reader beneath does, and its ReadPlaced does the
//     decorator's job too.
//
// A new optional interface must be added to the wrappers (wrap_test.go
// fails until it is).

// Wrapper is a Backend that decorates another one.
type Wrapper interface {
	Backend
	// Unwrap returns the Backend beneath.
	Unwrap() Backend
}

// As returns be's implementation of the optional interface T (Spooler,
// StreamSaver, TempRemover, PrefixLister), following the rule above.
func As[T any](be Backend) (T, bool) {
	var zero T
	c, ok := be.(T)
	if !ok {
		return zero, false
	}
	w, ok := be.(Wrapper)
	if !ok {
		return c, true
	}
	if o, ok := be.(ownsCapability); ok && o.ownsCapability((*T)(nil)) {
		return c, true
	}
	if _, ok := As[T](w.Unwrap()); !ok {
		return zero, false
	}
	return c, true
}

// ownsCapability is implemented by a wrapper that provides an optional
// interface of its own rather than by calling down, whether or not the
// Backend beneath has it (SpoolToFiles's Spooler). target is a nil
// pointer to the interface.
type ownsCapability interface {
	ownsCapability(target any) bool
}
