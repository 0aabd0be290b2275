# migrate-linux.sh with the guest's disk a qcow2 image: the source
# allocates clusters (L2 tables, refcounts) while the migration runs, the
# destination reads the metadata afresh when it takes the image's lock.
# timeout: 900
MIG_FORMAT=qcow2 . /nested/tests/migrate-linux.sh
