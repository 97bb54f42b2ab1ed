//! Reading the provider's `/metrics` text, for the tests and the benchmark alike.

/// The sum of every sample named `name` in Prometheus text, whatever its labels (a
/// family with one series per connection, say); `None` if there is none.
pub fn metric_sum(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            // `name{labels} value` or `name value`, not `name_more ...`.
            let value = match rest.strip_prefix('{') {
                Some(labelled) => labelled.rsplit_once('}')?.1,
                None => rest.strip_prefix(' ')?,
            };
            value.split_whitespace().next()?.parse::<f64>().ok()
        })
        .reduce(|sum, value| sum + value)
}
