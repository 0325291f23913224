// Package chunker splits a byte stream into content-defined chunks.
//
// Deduplication only works if an edit to a file changes the chunks near the
// edit and no others. Fixed-size blocks fail that test: one inserted byte
// shifts every later block. Here a cut point is chosen where a rolling hash
// of the last 64 bytes matches a mask, so cut points move with the content
// and the stream re-synchronises at the first unchanged cut after an edit.
//
// The algorithm is FastCDC (Xia et al., 2016 and 2020):
//
//   - The hash is a gear hash, h = h<<1 + gear[b]. Bit k of h depends only
//     on the last k+1 bytes, so the top bits see a 64-byte window with one
//     shift and one add per byte, much cheaper than Rabin fingerprints. The
//     masks use spread-out high bits so every test sees most of the window.
//   - No cut is allowed before Min bytes, and the hashing starts only 64
//     bytes before Min, so most of every short chunk is skipped outright.
//     Starting exactly one window early makes the test at each position a
//     function of the 64 bytes ending there, not of where hashing started.
//   - Normalised chunking, level 2: before Avg the mask has log2(Avg)+2
//     one-bits (a cut is 4x less likely), after Avg it has log2(Avg)-2 (4x
//     more likely). This narrows the size distribution around Avg, which
//     keeps chunks away from the Min and Max clamps where cut points stop
//     being content-defined. With Min = Avg/2 (the defaults) the mean chunk
//     is about 1.2 x Avg; see expectedSize in the tests.
//   - A chunk that reaches Max is cut there; long runs of identical bytes
//     (which never match) become Max-sized chunks.
//
// The gear table is drawn from a ChaCha8 generator keyed with the
// repository's secret seed. Cut points of a public gear table leak
// information about the data (an attacker who sees chunk sizes can confirm
// guesses of file contents); a secret table makes the sizes uninformative
// without the seed. The seed is not a hash key for chunk IDs; hashing chunks
// is done elsewhere.
//
// A Chunker holds no state between calls, so one Chunker may be shared by
// any number of goroutines. A Stream, which carries one stream's state
// from one piece of it to the next, belongs to one goroutine.
package chunker
