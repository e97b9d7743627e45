# Benchmark job: every second, write a 0-99 percentage to STATUS (atomically)
# and a line to stdout; after SECONDS write FINISHED to RESULT and exit 0.
# Perl because it starts in ~2 ms and sleeps without forking: with 1,000 of
# these running, the machine's load is the supervisor's, not the programs'.
use strict;
my ($status, $result, $seconds) = @ARGV;
$| = 1;
sub put {
    my ($path, $text) = @_;
    open(my $f, '>', "$path.tmp") or die "$path.tmp: $!";
    print $f $text;
    close $f;
    rename("$path.tmp", $path) or die "$path: $!";
}
my $start = time;
put($result, "UNSET");
for (my $i = 0; time - $start < $seconds; $i++) {
    put($status, $i % 100);
    print "tick $i\n";
    select(undef, undef, undef, 1.0);
}
put($result, "FINISHED");
put($status, "100");
