// TurboJPEG: libjpeg-turbo's API that returns -1 and an error string instead of longjmp-ing out of the decoder.
#include <turbojpeg.h>
