"""The book's plumbing: run profiles (:mod:`.profiles`), the runner (:mod:`.runner`),
provenance (:mod:`.provenance`), display labels (:mod:`.labels`) and figures (:mod:`.figures`)."""
