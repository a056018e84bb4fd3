//! Bad input: shapes that do not fit get an error naming the op and the shapes.
