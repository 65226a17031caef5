"""A minimal backend that lives only in the tests: one folder and one registration, as
README's "Adding a backend" describes. Its "cloud" is memory: jobs are dictionaries,
the first ``fake.reclaims`` spot attempts are reclaimed, then attempts succeed."""
