//! Every kernel family against the f64 reference (NaN-poisoned outputs, random inputs).

use crate::common::check_family;

macro_rules! family_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                check_family(stringify!($name));
            }
        )*
    };
}

family_tests!(
    conv,
    pointwise,
    depthwise,
    batchnorm,
    fused,
    elementwise,
    pool,
    linear,
    loss,
    dropout,
    optim,
    reduce
);
