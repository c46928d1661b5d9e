//! The CLI's aligned text tables: one header row and data rows, columns padded to
//! their widest cell, the last column unpadded.

/// Prints `rows` (the first is the header) as aligned columns.
pub fn print_table<const N: usize>(rows: &[[String; N]]) {
    let mut widths = [0usize; N];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for row in rows {
        let mut line = String::new();
        for (column, (cell, width)) in row.iter().zip(widths).enumerate() {
            if column + 1 == N {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  "));
            }
        }
        println!("{}", line.trim_end());
    }
}

/// Bytes for a person: `512B`, `12.3KiB`, `64.0MiB`, `2.00GiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (unit, size) in UNITS {
        if bytes >= size {
            let value = bytes as f64 / size as f64;
            return if value < 10.0 {
                format!("{value:.2}{unit}")
            } else {
                format!("{value:.1}{unit}")
            };
        }
    }
    format!("{bytes}B")
}

#[cfg(test)]
mod tests {
    #[test]
    fn bytes_read_as_people_write_them() {
        assert_eq!(super::human_bytes(0), "0B");
        assert_eq!(super::human_bytes(1023), "1023B");
        assert_eq!(super::human_bytes(12_595), "12.3KiB");
        assert_eq!(super::human_bytes(64 << 20), "64.0MiB");
        assert_eq!(super::human_bytes(2 << 30), "2.00GiB");
    }
}
