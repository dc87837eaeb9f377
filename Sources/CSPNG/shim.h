// libspng: PNG decode/encode that reports every failure as a return code (no longjmp, no exit), and that can
// return palette indices rather than colours (libpng's simplified API always expands palettes).
#include <spng.h>
