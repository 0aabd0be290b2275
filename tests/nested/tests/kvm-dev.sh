# The outer machine has a usable /dev/kvm after inserting irqbypass, kvm,
# kvm-amd (nested SVM in QEMU TCG).
# timeout: 30
. /nested/lib.sh

for m in irqbypass kvm kvm_amd; do
    [ -d "/sys/module/$m" ] || fail "module $m is not loaded (see @@TERN-NESTED insmod lines)"
done
[ -c /dev/kvm ] || fail "/dev/kvm is missing after insmod kvm-amd"
grep -qw svm /proc/cpuinfo || fail "the outer CPU has no svm flag (QEMU -cpu ...,+svm)"
grep -qw npt /proc/cpuinfo || echo "note: no npt flag in /proc/cpuinfo"
echo "kvm_amd nested=$(cat /sys/module/kvm_amd/parameters/nested 2>/dev/null) npt=$(cat /sys/module/kvm_amd/parameters/npt 2>/dev/null)"
ls -l /dev/kvm
