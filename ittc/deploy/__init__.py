"""Making and running clusters: the key ceremony's output (:mod:`~ittc.deploy.ceremony`,
laid out as :mod:`~ittc.deploy.layout` says), destroying what it leaves behind
(:mod:`~ittc.deploy.leftovers`), every node of a ceremony's output as local processes
(:mod:`~ittc.deploy.localcluster`: trials, the demo, benchmarks and tests), sites' keys
and enrollment for resharing (:mod:`~ittc.deploy.sites`), and the coordinator of a
reshare (:mod:`~ittc.deploy.reshare`)."""
