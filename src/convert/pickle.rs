//! (being written) A pickle reader that treats the stream as data and never executes it.
