"""The worker runtime: the batch loop on librdkafka around the pure guard and fold (``loop``),
its local tables and their changelogs (``tables``), its HTTP views (``views``), the process
(``main``), and starting worker processes from outside (``processes``)."""
