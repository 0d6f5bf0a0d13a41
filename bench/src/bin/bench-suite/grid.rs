//! A table of text cells, rendered as markdown (the report) or as aligned
//! plain text (the terminal summary): the one row formatter of both, so a
//! table's columns are written once.

use std::fmt::Write as _;

/// Column titles, a markdown alignment per column, and rows of cells.
pub(crate) struct Grid {
    heads: Vec<String>,
    /// `---`, `--:` or `:-:` per column, as in the markdown alignment row.
    align: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Grid {
    /// A table with the markdown `header` (`| a | b |`) and alignment row
    /// (`|---|--:|`).
    pub(crate) fn new(header: &str, align: &str) -> Grid {
        let mut grid = Grid {
            heads: Vec::new(),
            align: Vec::new(),
            rows: Vec::new(),
        };
        grid.add_columns(header, align);
        grid
    }

    /// More columns at the right, in the same notation as [`Grid::new`].
    pub(crate) fn add_columns(&mut self, header: &str, align: &str) {
        self.heads.extend(split(header));
        self.align.extend(split(align));
    }

    /// One row; a row with fewer cells than columns leaves the rest empty.
    pub(crate) fn row<C: ToString>(&mut self, cells: impl IntoIterator<Item = C>) {
        self.rows
            .push(cells.into_iter().map(|c| c.to_string()).collect());
    }

    /// The markdown table: header, alignment row, rows.
    pub(crate) fn markdown(&self, md: &mut String) {
        let line = |cells: &[String]| format!("| {} |", cells.join(" | "));
        let _ = writeln!(md, "{}\n|{}|", line(&self.heads), self.align.join("|"));
        for row in &self.rows {
            let _ = writeln!(md, "{}", line(row));
        }
    }

    /// The markdown table under a `## title`.
    pub(crate) fn section(&self, md: &mut String, title: &str) {
        let _ = writeln!(md, "## {title}\n");
        self.markdown(md);
    }

    /// Plain text: each column padded to its widest cell, right-aligned
    /// where the markdown aligns right, markdown emphasis and code marks
    /// dropped.
    pub(crate) fn text(&self) -> String {
        let plain = |row: &[String]| -> Vec<String> {
            (0..self.heads.len())
                .map(|i| row.get(i).map_or("", String::as_str))
                .map(|c| c.replace("**", "").replace('`', ""))
                .collect()
        };
        let lines: Vec<Vec<String>> = std::iter::once(&self.heads)
            .chain(&self.rows)
            .map(|row| plain(row))
            .collect();
        let width = |i: usize| {
            let cells = lines.iter().map(|l| l[i].chars().count());
            cells.max().unwrap_or(0)
        };
        let widths: Vec<usize> = (0..self.heads.len()).map(width).collect();
        let mut out = String::new();
        for line in &lines {
            let cells = line.iter().zip(&widths).zip(&self.align);
            let padded: Vec<String> = cells
                .map(|((cell, &w), align)| match align.ends_with(':') {
                    true => format!("{cell:>w$}"),
                    false => format!("{cell:<w$}"),
                })
                .collect();
            let _ = writeln!(out, "{}", padded.join("  ").trim_end());
        }
        out
    }
}

/// The cells of a markdown row (`| a | b |` → `a`, `b`).
fn split(line: &str) -> impl Iterator<Item = String> + '_ {
    let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
    inner.split('|').map(|c| c.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid() -> Grid {
        let mut grid = Grid::new("| name | **n** |", "|---|--:|");
        grid.add_columns("| note |", "|---|");
        grid.row(["`a`", "1", "x"]);
        grid.row(["long name", "100"]);
        grid
    }

    #[test]
    fn markdown_keeps_the_header_alignment_and_cells() {
        let mut md = String::new();
        grid().markdown(&mut md);
        assert_eq!(
            md,
            "| name | **n** | note |\n|---|--:|---|\n| `a` | 1 | x |\n| long name | 100 |\n"
        );
    }

    #[test]
    fn text_pads_each_column_and_drops_the_markdown_marks() {
        assert_eq!(
            grid().text(),
            "name         n  note\n\
             a            1  x\n\
             long name  100\n"
        );
    }
}
